"""Neural network building blocks of EnCodec; each can run offline or carry streaming state."""
