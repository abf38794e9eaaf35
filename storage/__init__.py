"""Per-chat history storage. Callers use `open_store(url)` and the `Store` interface only."""

from storage.base import (
    ChatConfig,
    ChatKey,
    ChatRecord,
    ConversationRecord,
    MessageStatus,
    ReplyOutcome,
    Role,
    Store,
    StoredMessage,
    UndeliveredReply,
)
from storage.errors import (
    DatabaseURLError,
    ForeignDatabaseError,
    SchemaTooNewError,
    StorageCorruptError,
    StorageError,
    StorageLockedError,
    StorageUnavailableError,
)
from storage.factory import open_store

__all__ = [
    "ChatConfig",
    "ChatKey",
    "ChatRecord",
    "ConversationRecord",
    "DatabaseURLError",
    "ForeignDatabaseError",
    "MessageStatus",
    "ReplyOutcome",
    "Role",
    "SchemaTooNewError",
    "StorageCorruptError",
    "StorageError",
    "StorageLockedError",
    "StorageUnavailableError",
    "Store",
    "StoredMessage",
    "UndeliveredReply",
    "open_store",
]
