// src/components/Chat/ChatRoom.tsx
import React, { useState, useEffect, useRef } from 'react';
import { useWebSocket } from '../../hooks/useWebSocket';
import { useAuth } from '../../hooks/useAuth';

interface Message {
  id: string;
  userId: string;
  userName: string;
  message: string;
  timestamp: Date;
}

interface ChatRoomProps {
  roomId: string;
}

export const ChatRoom: React.FC<ChatRoomProps> = ({ roomId }) => {
  const { user, token } = useAuth();
  const { connected, emit, on, off, joinRoom, leaveRoom } = useWebSocket({ token });
  const [messages, setMessages] = useState<Message[]>([]);
  const [newMessage, setNewMessage] = useState('');
  const [typing, setTyping] = useState<Record<string, boolean>>({});
  const messagesEndRef = useRef<HTMLDivElement>(null);
  const typingTimeoutRef = useRef<NodeJS.Timeout>();

  useEffect(() => {
    if (connected && roomId) {
      joinRoom(roomId);
    }

    return () => {
      if (roomId) {
        leaveRoom(roomId);
      }
    };
  }, [connected, roomId, joinRoom, leaveRoom]);

  useEffect(() => {
    const handleChatMessage = (message: Message) => {
      setMessages(prev => [...prev, message]);
    };

    const handleUserTyping = ({ userId, typing: isTyping }: { 
      userId: string; 
      typing: boolean; 
    }) => {
      if (userId !== user?.id) {
        setTyping(prev => ({ ...prev, [userId]: isTyping }));
      }
    };

    on('chat_message', handleChatMessage);
    on('user_typing', handleUserTyping);

    return () => {
      off('chat_message', handleChatMessage);
      off('user_typing', handleUserTyping);
    };
  }, [on, off, user?.id]);

  useEffect(() => {
    messagesEndRef.current?.scrollIntoView({ behavior: 'smooth' });
  }, [messages]);

  const sendMessage = () => {
    if (newMessage.trim() && connected) {
      emit('message', {
        type: 'send_message',
        data: {
          roomId,
          message: newMessage.trim(),
        },
      });
      setNewMessage('');
    }
  };

  const handleInputChange = (e: React.ChangeEvent<HTMLInputElement>) => {
    setNewMessage(e.target.value);

    // Handle typing indicators
    if (e.target.value.length > 0) {
      emit('message', {
        type: 'typing_start',
        data: { roomId },
      });

      // Clear existing timeout
      if (typingTimeoutRef.current) {
        clearTimeout(typingTimeoutRef.current);
      }

      // Set new timeout to stop typing
      typingTimeoutRef.current = setTimeout(() => {
        emit('message', {
          type: 'typing_stop',
          data: { roomId },
        });
      }, 2000);
    } else {
      emit('message', {
        type: 'typing_stop',
        data: { roomId },
      });
    }
  };

  const handleKeyPress = (e: React.KeyboardEvent) => {
    if (e.key === 'Enter') {
      e.preventDefault();
      sendMessage();
    }
  };

  const typingUsers = Object.keys(typing).filter(userId => typing[userId]);

  return (
    <div className="flex flex-col h-96 border rounded-lg">
      <div className="flex-1 overflow-y-auto p-4 space-y-2">
        {messages.map((message) => (
          <div
            key={message.id}
            className={`flex ${
              message.userId === user?.id ? 'justify-end' : 'justify-start'
            }`}
          >
            <div
              className={`max-w-xs px-3 py-2 rounded-lg ${
                message.userId === user?.id
                  ? 'bg-blue-500 text-white'
                  : 'bg-gray-200 text-gray-800'
              }`}
            >
              {message.userId !== user?.id && (
                <div className="text-xs font-semibold mb-1">
                  {message.userName}
                </div>
              )}
              <div>{message.message}</div>
              <div className="text-xs opacity-75 mt-1">
                {new Date(message.timestamp).toLocaleTimeString()}
              </div>
            </div>
          </div>
        ))}
        <div ref={messagesEndRef} />
      </div>

      {typingUsers.length > 0 && (
        <div className="px-4 py-2 text-sm text-gray-500">
          {typingUsers.length === 1
            ? `Someone is typing...`
            : `${typingUsers.length} people are typing...`}
        </div>
      )}

      <div className="border-t p-4">
        <div className="flex space-x-2">
          <input
            type="text"
            value={newMessage}
            onChange={handleInputChange}
            onKeyPress={handleKeyPress}
            placeholder="Type a message..."
            className="flex-1 px-3 py-2 border rounded-lg focus:outline-none focus:ring-2 focus:ring-blue-500"
            disabled={!connected}
          />
          <button
            onClick={sendMessage}
            disabled={!connected || !newMessage.trim()}
            className="px-4 py-2 bg-blue-500 text-white rounded-lg hover:bg-blue-600 disabled:opacity-50 disabled:cursor-not-allowed"
          >
            Send
          </button>
        </div>
        {!connected && (
          <div className="text-red-500 text-sm mt-2">
            Disconnected from chat server
          </div>
        )}
      </div>
    </div>
  );
};
