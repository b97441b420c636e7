// The blueprint's ChatRoom imports its hook from here: it gets this package's hook, unchanged.
export { useWebSocket } from '../../../../src/useWebSocket';
