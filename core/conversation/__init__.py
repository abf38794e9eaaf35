"""Conversations: a chat's message in, the model's streamed reply out, all of it in the store.

Its parts, each with one job:
- `chain`: reply chains, a reply to an older answer continuing from that point (a branch);
- `context`: what the model is sent (the system prompt and the newest history that fits);
- `reply`: one answer's life as a state machine, and the deltas its consumer reads;
- `service`: the per-person queues that drive each reply through its life and save every step;
- `reset`: what a reset did to the replies in flight, and the answer that says so;
- `observer`: what the service tells whoever watches it (the app's metrics);
- `gate`: what a reply passes before its model call (rate limit, budgets, model slots).
"""

from ..errors import IllegalMoveError
from .chain import REPLY_CHAIN_MAX_TURNS, ChainTurn, FetchChain
from .chat import Author, ChatRef
from .context import TRUNCATION_MARKER, build_context
from .gate import Gate
from .observer import NO_OBSERVER, ConversationObserver, NoObserver
from .reply import BLIND_MODEL_NOTE, INTERRUPTED_NOTE, Reply, ReplyState
from .reset import ResetReport, describe_reset, describe_stop
from .service import Arrival, ConversationService

__all__ = [
    "BLIND_MODEL_NOTE",
    "INTERRUPTED_NOTE",
    "NO_OBSERVER",
    "REPLY_CHAIN_MAX_TURNS",
    "TRUNCATION_MARKER",
    "Arrival",
    "Author",
    "ChainTurn",
    "ChatRef",
    "ConversationObserver",
    "ConversationService",
    "FetchChain",
    "Gate",
    "IllegalMoveError",
    "NoObserver",
    "Reply",
    "ReplyState",
    "ResetReport",
    "build_context",
    "describe_reset",
    "describe_stop",
]
