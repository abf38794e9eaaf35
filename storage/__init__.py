"""Per-chat history storage. Callers use `open_store(url)` and the `Store` interface only."""

from storage.base import (
    ChatConfig,
    ChatKey,
    ChatRecord,
    ChatSummary,
    ConversationRecord,
    MessageImage,
    MessageStatus,
    ReplyOutcome,
    Role,
    Store,
    StoredMessage,
    StoreStatus,
    UndeliveredReply,
    WriteObserver,
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
from storage.factory import inspect_store, open_store

__all__ = [
    "ChatConfig",
    "ChatKey",
    "ChatRecord",
    "ChatSummary",
    "ConversationRecord",
    "DatabaseURLError",
    "ForeignDatabaseError",
    "MessageImage",
    "MessageStatus",
    "ReplyOutcome",
    "Role",
    "SchemaTooNewError",
    "StorageCorruptError",
    "StorageError",
    "StorageLockedError",
    "StorageUnavailableError",
    "Store",
    "StoreStatus",
    "StoredMessage",
    "UndeliveredReply",
    "WriteObserver",
    "inspect_store",
    "open_store",
]
