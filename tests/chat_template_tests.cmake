# chat template tests (owned by the chat-template work)
