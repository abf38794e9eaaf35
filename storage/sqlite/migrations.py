"""The SQLite schema, as numbered forward migrations (the pattern of simonw/llm's `migrations.py`).

Each step is a small function `mNNN_what(db)`; its number is its position in `MIGRATIONS`, and
the number of the last applied step is kept in `PRAGMA user_version`. `migrate()` applies the
missing steps in order, each in its own transaction together with the version bump, so a crash
mid-migration leaves the database at the previous version, never half-way. Steps are never
edited once released: a change of schema is a new step.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

import aiosqlite

Migration = Callable[[aiosqlite.Connection], Awaitable[None]]

MIGRATIONS: list[Migration] = []


def migration(step: Migration) -> Migration:
    """Register `step` as the next version; its name must carry that number (m001_, m002_...)."""
    expected = f"m{len(MIGRATIONS) + 1:03d}_"
    if not step.__name__.startswith(expected):
        raise RuntimeError(f"migration {step.__name__} must be named {expected}...")
    MIGRATIONS.append(step)
    return step


async def _run(db: aiosqlite.Connection, statements: tuple[str, ...]) -> None:
    # executescript() would COMMIT the surrounding transaction first, so run one by one.
    for statement in statements:
        await db.execute(statement)


@migration
async def m001_initial(db: aiosqlite.Connection) -> None:
    await _run(
        db,
        (
            """
            CREATE TABLE chats (
                id INTEGER PRIMARY KEY,
                platform TEXT NOT NULL,
                chat_id TEXT NOT NULL,
                thread_id TEXT NOT NULL DEFAULT '',
                model TEXT,
                system_prompt TEXT,
                created_at TEXT NOT NULL,
                UNIQUE (platform, chat_id, thread_id)
            )
            """,
            # Export looks chats up by chat id alone, across platforms.
            "CREATE INDEX chats_by_chat_id ON chats (chat_id)",
            """
            CREATE TABLE conversations (
                id INTEGER PRIMARY KEY,
                chat INTEGER NOT NULL REFERENCES chats (id) ON DELETE CASCADE,
                created_at TEXT NOT NULL
            )
            """,
            # The current conversation of a chat is its newest one.
            "CREATE INDEX conversations_newest ON conversations (chat, id)",
            """
            CREATE TABLE messages (
                id INTEGER PRIMARY KEY,
                conversation INTEGER NOT NULL REFERENCES conversations (id) ON DELETE CASCADE,
                reply_to INTEGER REFERENCES messages (id) ON DELETE SET NULL,
                role TEXT NOT NULL CHECK (role IN ('user', 'assistant')),
                author_id TEXT,
                author_name TEXT,
                text TEXT NOT NULL DEFAULT '',
                status TEXT NOT NULL
                    CHECK (status IN ('complete', 'streaming', 'interrupted', 'error')),
                model TEXT,
                provider TEXT,
                first_token_ms INTEGER,
                total_ms INTEGER,
                prompt_tokens INTEGER,
                completion_tokens INTEGER,
                total_tokens INTEGER,
                error TEXT,
                -- JSON array of the platform messages that carry this one (a long reply spans
                -- several); a column, not a table, so storing a message stays one statement.
                platform_ids TEXT NOT NULL DEFAULT '[]',
                created_at TEXT NOT NULL,
                updated_at TEXT NOT NULL
            )
            """,
            # Turn order: a reply sorts right after the user message it answers. Serves
            # "newest N messages of a conversation up to turn T" as one backwards index range.
            "CREATE INDEX messages_by_turn ON messages (conversation, coalesce(reply_to, id))",
            # Start-up recovery finds replies a crash left streaming without a table scan.
            "CREATE INDEX messages_streaming ON messages (status) WHERE status = 'streaming'",
        ),
    )


@migration
async def m002_tokens_estimated(db: aiosqlite.Connection) -> None:
    # 1 when the token counts are the client's guess (the provider reported no usage), so
    # usage reports and budgets can tell measured spending from estimated.
    await _run(
        db,
        ("ALTER TABLE messages ADD COLUMN tokens_estimated INTEGER NOT NULL DEFAULT 0",),
    )


@migration
async def m003_chat_titles(db: aiosqlite.Connection) -> None:
    # The chat's name as its platform shows it (a group's title, a channel, the other person
    # in a private chat), kept current as messages arrive: `parley history list` shows it next
    # to the id, which alone names nothing an operator recognises.
    await _run(db, ("ALTER TABLE chats ADD COLUMN title TEXT",))


@migration
async def m004_delivery_pending(db: aiosqlite.Connection) -> None:
    # 1 while the platform has not confirmed that the user sees a reply's final text (or the
    # line saying it was interrupted): set when a reply's first message goes out, cleared when
    # its last text got through. A row still at 1 at the next start was cut off on screen by a
    # crash, a stop or an outage; that start marks it and shows the user so, once.
    await _run(
        db,
        (
            "ALTER TABLE messages ADD COLUMN delivery_pending INTEGER NOT NULL DEFAULT 0",
            "CREATE INDEX messages_delivery_pending ON messages (delivery_pending)"
            " WHERE delivery_pending = 1",
        ),
    )


@migration
async def m005_images(db: aiosqlite.Connection) -> None:
    # Images users sent, kept in the database (why, rather than files beside it: storage.base).
    # One row per distinct image, named by the SHA-256 of its bytes, so a photo forwarded twice
    # is stored once; `message_images` says which message carries which, in order. A rowid
    # table for `images`: SQLite keeps big blobs best in one (WITHOUT ROWID suits small rows).
    # `image_count` on the message lets a context load know a turn had images without a join,
    # and ask for the bytes of the newest turns only.
    await _run(
        db,
        (
            """
            CREATE TABLE images (
                id INTEGER PRIMARY KEY,
                sha256 TEXT NOT NULL UNIQUE,
                media_type TEXT NOT NULL CHECK (media_type LIKE 'image/%'),
                width INTEGER NOT NULL CHECK (width > 0),
                height INTEGER NOT NULL CHECK (height > 0),
                data BLOB NOT NULL,
                created_at TEXT NOT NULL
            )
            """,
            """
            CREATE TABLE message_images (
                message INTEGER NOT NULL REFERENCES messages (id) ON DELETE CASCADE,
                position INTEGER NOT NULL,
                image INTEGER NOT NULL REFERENCES images (id),
                PRIMARY KEY (message, position)
            ) WITHOUT ROWID
            """,
            # Which messages use an image: what a future clean-up of unused images asks.
            "CREATE INDEX message_images_by_image ON message_images (image)",
            "ALTER TABLE messages ADD COLUMN image_count INTEGER NOT NULL DEFAULT 0",
        ),
    )


@migration
async def m006_image_generation(db: aiosqlite.Connection) -> None:
    # A chat's /image switch (its admins' /image off); NULL: the operator's default (on when
    # IMAGE_MODEL is set), like the chat's model and system prompt.
    await _run(
        db,
        (
            "ALTER TABLE chats ADD COLUMN image_generation INTEGER"
            " CHECK (image_generation IN (0, 1))",
        ),
    )


@migration
async def m007_usage(db: aiosqlite.Connection) -> None:
    # The usage ledger: one row per model call (a chat reply, a transcription, a drawing), kept
    # for reports (`parley usage`, /stats); and running totals per user, chat and the guests'
    # pools for each UTC day and month, updated in the same transaction as the ledger row, so a
    # budget check is one primary-key lookup however long the ledger grows. Money is integer
    # micro-dollars; a NULL cost is a model without a price. `message` names the reply row a
    # chat call belongs to (SET NULL: a deleted history keeps what was spent).
    await _run(
        db,
        (
            """
            CREATE TABLE usage (
                id INTEGER PRIMARY KEY,
                at TEXT NOT NULL,
                kind TEXT NOT NULL CHECK (kind IN ('chat', 'transcription', 'image')),
                platform TEXT NOT NULL,
                chat_id TEXT NOT NULL,
                thread_id TEXT NOT NULL,
                user_id TEXT NOT NULL,
                user_name TEXT,
                model TEXT,
                provider TEXT,
                prompt_tokens INTEGER NOT NULL CHECK (prompt_tokens >= 0),
                completion_tokens INTEGER NOT NULL CHECK (completion_tokens >= 0),
                estimated INTEGER NOT NULL CHECK (estimated IN (0, 1)),
                images_in INTEGER NOT NULL CHECK (images_in >= 0),
                audio_seconds REAL NOT NULL CHECK (audio_seconds >= 0),
                images_out INTEGER NOT NULL CHECK (images_out >= 0),
                cost_micros INTEGER CHECK (cost_micros >= 0),
                guest INTEGER NOT NULL CHECK (guest IN (0, 1)),
                message INTEGER REFERENCES messages (id) ON DELETE SET NULL
            )
            """,
            "CREATE INDEX usage_by_time ON usage (at)",
            """
            CREATE TABLE usage_totals (
                scope TEXT NOT NULL CHECK (scope IN ('user', 'chat', 'guests')),
                key TEXT NOT NULL,
                period TEXT NOT NULL,
                tokens INTEGER NOT NULL,
                cost_micros INTEGER NOT NULL,
                PRIMARY KEY (scope, key, period)
            ) WITHOUT ROWID
            """,
        ),
    )


@migration
async def m008_budget_overrides(db: aiosqlite.Connection) -> None:
    # Budgets an admin set with /budget for one user or chat, in place of the operator's
    # setting: the key is the usage totals' ("platform:user_id", "platform:chat_id:thread_id"),
    # the name a `core.budgets.LIMITS` one, the value tokens or micro-dollars. No row: the
    # setting applies.
    await _run(
        db,
        (
            """
            CREATE TABLE budget_overrides (
                scope TEXT NOT NULL CHECK (scope IN ('user', 'chat')),
                key TEXT NOT NULL,
                name TEXT NOT NULL,
                value INTEGER NOT NULL CHECK (value > 0),
                PRIMARY KEY (scope, key, name)
            ) WITHOUT ROWID
            """,
        ),
    )


@migration
async def m009_history_summaries(db: aiosqlite.Connection) -> None:
    # One summary per conversation of its turns that fell out of the model's context window
    # (SUMMARY_MODEL), up to and including message `through`; rewritten as more fall out.
    await _run(
        db,
        (
            """
            CREATE TABLE history_summaries (
                conversation INTEGER PRIMARY KEY
                    REFERENCES conversations (id) ON DELETE CASCADE,
                through INTEGER NOT NULL,
                text TEXT NOT NULL,
                model TEXT NOT NULL DEFAULT '',
                updated_at TEXT NOT NULL
            )
            """,
        ),
    )


@migration
async def m010_reply_reasoning(db: aiosqlite.Connection) -> None:
    # A reply's reasoning (a thinking model's thoughts, `core.reasoning`), apart from its text:
    # a table of its own rather than a column, so no query that builds a model's context, and
    # no history export, ever reads it by accident. At most one row per reply; most have none.
    await _run(
        db,
        (
            """
            CREATE TABLE reply_reasoning (
                message INTEGER PRIMARY KEY REFERENCES messages (id) ON DELETE CASCADE,
                text TEXT NOT NULL
            )
            """,
        ),
    )


@migration
async def m011_reply_chains(db: aiosqlite.Connection) -> None:
    # Reply chains: `parent` is the bot's reply a user message answers by replying to it (a
    # branch), NULL for a message that follows the conversation's newest turn. SET NULL: a
    # deleted reply ends the chain there. `platform_messages` indexes the platform ids of
    # `messages.platform_ids` (a JSON array, not searchable by index), kept by triggers so no
    # write path changes; it finds the stored message a platform message carries.
    await _run(
        db,
        (
            "ALTER TABLE messages ADD COLUMN parent INTEGER"
            " REFERENCES messages (id) ON DELETE SET NULL",
            """
            CREATE TABLE platform_messages (
                platform_id TEXT NOT NULL,
                message INTEGER NOT NULL REFERENCES messages (id) ON DELETE CASCADE,
                PRIMARY KEY (platform_id, message)
            ) WITHOUT ROWID
            """,
            "CREATE INDEX platform_messages_by_message ON platform_messages (message)",
            """
            CREATE TRIGGER platform_ids_inserted AFTER INSERT ON messages
            WHEN new.platform_ids != '[]' BEGIN
                INSERT OR IGNORE INTO platform_messages (platform_id, message)
                SELECT value, new.id FROM json_each(new.platform_ids);
            END
            """,
            """
            CREATE TRIGGER platform_ids_updated AFTER UPDATE OF platform_ids ON messages
            WHEN new.platform_ids IS NOT old.platform_ids BEGIN
                DELETE FROM platform_messages WHERE message = new.id;
                INSERT OR IGNORE INTO platform_messages (platform_id, message)
                SELECT value, new.id FROM json_each(new.platform_ids);
            END
            """,
            "INSERT OR IGNORE INTO platform_messages (platform_id, message)"
            " SELECT j.value, m.id FROM messages m, json_each(m.platform_ids) j"
            " WHERE m.platform_ids != '[]'",
        ),
    )


@migration
async def m012_chat_persona(db: aiosqlite.Connection) -> None:
    # The persona a chat chose with /persona, by name (`core.personas`); NULL: none. A name, not
    # a copy of the prompt: the operator's edits to the personas file reach every chat using it.
    await _run(db, ("ALTER TABLE chats ADD COLUMN persona TEXT",))


@migration
async def m013_replicas(db: aiosqlite.Connection) -> None:
    # Several replicas on one database (`bots.replica`): each reply row names the replica
    # writing it; `replicas` holds each live replica's lease; `inbox` each platform update
    # taken in, unique by its id (a second delivery is dropped), with the user message stored
    # for it (`message`, so a replica taking it over does not store it again) and `done` once
    # its reply was started, or its handler returned.
    # Both tables are transient (`parley history copy` skips them). SQLite, one process, keeps
    # them too, so both engines stay at the same version with the same columns.
    await _run(
        db,
        (
            "ALTER TABLE messages ADD COLUMN replica TEXT",
            "CREATE INDEX messages_unfinished ON messages (replica)"
            " WHERE status = 'streaming' OR delivery_pending = 1",
            """
            CREATE TABLE replicas (
                id TEXT PRIMARY KEY,
                started_at TEXT NOT NULL,
                expires_at REAL NOT NULL
            )
            """,
            """
            CREATE TABLE inbox (
                platform TEXT NOT NULL,
                update_id INTEGER NOT NULL,
                chat_key TEXT NOT NULL,
                body TEXT NOT NULL,
                received_at REAL NOT NULL,
                message INTEGER,
                done INTEGER NOT NULL DEFAULT 0 CHECK (done IN (0, 1)),
                PRIMARY KEY (platform, update_id)
            )
            """,
            "CREATE INDEX inbox_pending ON inbox (platform, chat_key, update_id) WHERE done = 0",
            # The sweep forgets the handled updates past their keep by this, not a full scan.
            "CREATE INDEX inbox_handled ON inbox (received_at) WHERE done = 1",
        ),
    )


LATEST_VERSION = len(MIGRATIONS)


async def schema_version(db: aiosqlite.Connection) -> int:
    rows = await db.execute_fetchall("PRAGMA user_version")
    return int(next(iter(rows))[0])


async def migrate(db: aiosqlite.Connection) -> list[str]:
    """Apply the missing steps in order; return the names of those applied.

    The version is re-read under the write lock, so two processes starting at once on the same
    file apply each step exactly once. The caller has already refused versions newer than ours.
    """
    applied: list[str] = []
    while True:
        await db.execute("BEGIN IMMEDIATE")
        try:
            version = await schema_version(db)
            if version >= LATEST_VERSION:
                await db.rollback()
                return applied
            step = MIGRATIONS[version]
            await step(db)
            await db.execute(f"PRAGMA user_version = {version + 1}")
            await db.commit()
        except BaseException:
            await db.rollback()
            raise
        applied.append(step.__name__)
