//! The in-process bus: every message goes straight to this node's fan-out queue.

use async_trait::async_trait;

use crate::domain::bus::{Bus, BusError, BusState};
use crate::domain::events::BusMessage;
use crate::fanout::{FanoutCmd, FanoutSender};

pub struct LocalBus {
    fanout: FanoutSender,
}

impl LocalBus {
    pub fn new(fanout: FanoutSender) -> Self {
        Self { fanout }
    }
}

#[async_trait]
impl Bus for LocalBus {
    async fn publish(&self, msg: BusMessage) -> Result<(), BusError> {
        self.fanout
            .send(FanoutCmd::Bus(msg))
            .await
            .map_err(|_| BusError::Closed)
    }

    fn state(&self) -> BusState {
        BusState {
            kind: "local",
            connected: !self.fanout.is_closed(),
            fanout_queue_depth: self.fanout.max_capacity() - self.fanout.capacity(),
        }
    }
}
