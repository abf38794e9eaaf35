"""The fake Discord, checked with a bare discord.py client (no Parley code but the endpoints).

If these pass, the fake speaks enough of Discord for discord.py: the adapter's tests can then
trust what it records.
"""

from __future__ import annotations

import asyncio
import contextlib
import io
from collections.abc import AsyncIterator

import aiohttp
import discord
import pytest
from discord import app_commands

from bots.discord.endpoints import use_endpoints
from tests.fakes.discord_api import (
    ALICE_ID,
    BOB_ID,
    BOT_ID,
    CONTENT_GONE,
    GENERAL_ID,
    GUILD_ID,
    MAX_UPLOAD_BYTES,
    RANDOM_ID,
    READONLY_ID,
    THREAD_ID,
    Attachment,
    FakeDiscord,
)

WAIT = 10.0


class _Client(discord.Client):
    """A bare client that keeps every message event and answers /ping."""

    def __init__(self, **kwargs: object) -> None:
        intents = discord.Intents.default()
        intents.message_content = True
        super().__init__(intents=intents, **kwargs)
        self.tree = app_commands.CommandTree(self)
        self.seen: asyncio.Queue[discord.Message] = asyncio.Queue()

        @self.tree.command(name="ping", description="Answers pong")
        async def ping(interaction: discord.Interaction, text: str) -> None:
            await interaction.response.send_message(f"pong {text}")

        @self.tree.command(name="draw", description="Answers with a file, after deferring")
        async def draw(interaction: discord.Interaction, size: str) -> None:
            await interaction.response.defer()
            data = PNG * (int(size) // len(PNG) + 1)
            file = discord.File(io.BytesIO(data[: int(size)]), filename="drawn.png")
            await interaction.followup.send(f"{size} bytes", file=file)

    async def setup_hook(self) -> None:
        await self.tree.sync()

    async def on_message(self, message: discord.Message) -> None:
        await self.seen.put(message)


@contextlib.asynccontextmanager
async def _running(fake: FakeDiscord, client: discord.Client) -> AsyncIterator[asyncio.Task]:
    use_endpoints(fake.api_base, fake.gateway_url)
    task = asyncio.create_task(client.start(fake.token))
    try:
        yield task
    finally:
        await client.close()
        with contextlib.suppress(asyncio.CancelledError, discord.DiscordException):
            await asyncio.wait_for(task, WAIT)


@pytest.fixture
async def fake() -> AsyncIterator[FakeDiscord]:
    async with FakeDiscord() as server:
        yield server


@pytest.fixture
async def client(fake: FakeDiscord) -> AsyncIterator[_Client]:
    bot = _Client(allowed_mentions=discord.AllowedMentions.none())
    async with _running(fake, bot):
        await fake.wait_connected()
        yield bot


async def _next_from(client: _Client, author_id: int) -> discord.Message:
    while True:
        message = await asyncio.wait_for(client.seen.get(), WAIT)
        if message.author.id == author_id:
            return message


async def test_gateway_delivers_guild_dm_reply_and_thread_messages(
    fake: FakeDiscord, client: _Client
) -> None:
    assert fake.identify_payloads[0]["intents"] & discord.Intents.message_content.flag
    assert fake.gateway_queries == [{"v": "10", "encoding": "json", "compress": "zlib-stream"}]
    assert client.user is not None and client.user.id == BOT_ID

    await fake.push_message(f"<@{BOT_ID}> hello", author=ALICE_ID)
    mention = await _next_from(client, ALICE_ID)
    assert client.latency < WAIT  # the heartbeat sent before IDENTIFY was acknowledged
    assert client.user in mention.mentions
    assert isinstance(mention.author, discord.Member)
    assert mention.author.guild_permissions.manage_guild
    assert mention.author.display_name == "Alice"

    await fake.push_dm("in private")
    dm = await _next_from(client, BOB_ID)
    assert isinstance(dm.channel, discord.DMChannel) and dm.content == "in private"

    sent = await mention.channel.send("bot says")
    await fake.push_message("answering the bot", reply_to=sent.id)
    reply = await _next_from(client, BOB_ID)
    assert reply.reference is not None and reply.reference.message_id == sent.id
    assert isinstance(reply.reference.resolved, discord.Message)
    assert reply.reference.resolved.author.id == BOT_ID

    await fake.push_message("in a thread", channel=THREAD_ID)
    threaded = await _next_from(client, BOB_ID)
    assert isinstance(threaded.channel, discord.Thread)
    assert threaded.channel.parent_id == GENERAL_ID

    await fake.push_message("", sticker_items=[{"id": "1", "name": "wave", "format_type": 1}])
    sticker = await _next_from(client, BOB_ID)
    assert sticker.content == "" and sticker.stickers[0].name == "wave"


async def test_rest_limits_are_discords(fake: FakeDiscord, client: _Client) -> None:
    channel = client.get_channel(GENERAL_ID)
    assert isinstance(channel, discord.TextChannel)

    with pytest.raises(discord.HTTPException) as too_long:
        await channel.send("x" * 2001)
    assert (too_long.value.status, too_long.value.code) == (400, 50035)
    assert "2000 or fewer" in str(too_long.value)
    with pytest.raises(discord.HTTPException) as empty:
        await channel.send(" ")
    assert empty.value.code == 50006

    readonly = client.get_channel(READONLY_ID)
    assert isinstance(readonly, discord.TextChannel)
    with pytest.raises(discord.Forbidden) as forbidden:
        await readonly.send("hi")
    assert forbidden.value.code == 50013

    message = await channel.send("x" * 2000)
    await message.edit(content="edited")
    assert fake.messages[message.id].edits == ["edited"]
    await fake.delete_message(message.id)
    with pytest.raises(discord.NotFound) as gone:
        await message.edit(content="again")
    assert gone.value.code == 10008


async def test_json_needs_the_exact_content_type(fake: FakeDiscord, client: _Client) -> None:
    url = f"{fake.api_base}/channels/{GENERAL_ID}/messages"
    headers = {"Authorization": f"Bot {fake.token}", "Content-Type": "text/plain"}
    async with aiohttp.ClientSession() as session:
        async with session.post(url, data='{"content": "hi"}', headers=headers) as response:
            assert response.status == 400
            assert (await response.json())["code"] == 50109
        headers["Content-Type"] = "application/json"
        async with session.post(url, data='{"content": "hi"}', headers=headers) as response:
            assert response.status == 200


async def test_429_is_waited_out_by_discord_py(fake: FakeDiscord, client: _Client) -> None:
    channel = client.get_channel(GENERAL_ID)
    assert isinstance(channel, discord.TextChannel)
    message = await channel.send("first")
    fake.rate_limit("PATCH", rf"/channels/{GENERAL_ID}/messages/\d+", retry_after=0.3)

    await message.edit(content="second")

    limited, accepted = fake.calls_to("PATCH", rf"/channels/{GENERAL_ID}/messages/\d+")
    assert (limited.status, accepted.status) == (429, 200)
    assert accepted.at - limited.at >= 0.3
    assert fake.messages[message.id].content == "second"
    assert fake.rate_limit_refusals(GENERAL_ID) == 1 and len(fake.writes(GENERAL_ID)) == 2


async def test_channel_bucket_headers_let_discord_py_wait_instead_of_429() -> None:
    limit, per = 5, 1.0  # Discord's 5 per 5 s, on a shorter clock
    async with FakeDiscord(channel_bucket=(limit, per)) as fake:
        client = _Client()
        async with _running(fake, client):
            await fake.wait_connected()
            channel = client.get_channel(GENERAL_ID)
            assert isinstance(channel, discord.TextChannel)
            sent = await asyncio.gather(*(channel.send(f"m{n}") for n in range(6)))
            for n in range(6):  # edits spend the same bucket
                await sent[0].edit(content=f"edit {n}")
        assert [fake.messages[m.id].content for m in sent[1:]] == [f"m{n}" for n in range(1, 6)]
        first = fake.messages[sent[0].id]
        assert first.content == "edit 5" and len(first.edit_times) == 6
        assert first.created_at <= first.edit_times[0] <= first.edit_times[-1]
        # What really happens: discord.py reads the headers and waits; no 429 is served.
        assert fake.rate_limit_refusals(GENERAL_ID) == 0
        writes = fake.writes(GENERAL_ID)
        assert len(writes) == 12
        # Discord's bucket is a fixed window that opens with a write and refills `per` later:
        # none of those windows took more than `limit`.
        opened, used = writes[0], 0
        for at in writes:
            if at - opened >= per:
                opened, used = at, 0
            used += 1
            assert used <= limit, writes
        assert writes[limit] - writes[0] >= per


async def test_an_added_member_can_write() -> None:
    carol = 1_000_000_000_000_001_000
    async with FakeDiscord() as fake:
        fake.add_member(carol, "Carol")
        assert str(carol) in {m["user"]["id"] for m in fake._guild_payload()["members"]}
        client = _Client()
        async with _running(fake, client):
            await fake.wait_connected()
            await fake.push_message("hi from Carol", author=carol)
            message = await _next_from(client, carol)
            assert isinstance(message.author, discord.Member)
            assert message.author.display_name == "Carol"


async def test_channel_bucket_state_and_429_over_raw_http() -> None:
    async with FakeDiscord(channel_bucket=(5, 5.0)) as fake:
        url = f"{fake.api_base}/channels/{GENERAL_ID}/messages"
        headers = {"Authorization": f"Bot {fake.token}"}
        remaining, buckets = [], set()
        async with aiohttp.ClientSession(headers=headers) as http:
            for n in range(5):
                async with http.post(url, json={"content": f"m{n}"}) as response:
                    assert response.status == 200
                    remaining.append(int(response.headers["X-RateLimit-Remaining"]))
                    buckets.add(response.headers["X-RateLimit-Bucket"])
                    assert 4.9 < float(response.headers["X-RateLimit-Reset-After"]) <= 5.0
                    message_id = (await response.json())["id"]
            async with http.patch(f"{url}/{message_id}", json={"content": "late"}) as response:
                assert response.status == 429
                assert response.headers["Content-Type"] == "application/json"
                assert response.headers["X-RateLimit-Remaining"] == "0"
                buckets.add(response.headers["X-RateLimit-Bucket"])
                body = await response.json()
                assert 0 < body["retry_after"] <= 5.0 and body["global"] is False
            async with http.post(
                f"{fake.api_base}/channels/{RANDOM_ID}/messages", json={"content": "x"}
            ) as response:  # the bucket is per channel
                assert response.headers["X-RateLimit-Remaining"] == "4"
        assert remaining == [4, 3, 2, 1, 0]
        assert len(buckets) == 1  # sends and edits share one bucket
        assert fake.messages[int(message_id)].content == "m4"  # refused: not applied
        assert len(fake.writes(GENERAL_ID)) == 5 and fake.rate_limit_refusals(GENERAL_ID) == 1


async def test_without_a_channel_bucket_writes_are_recorded_not_limited(
    fake: FakeDiscord, client: _Client
) -> None:
    channel = client.get_channel(GENERAL_ID)
    assert isinstance(channel, discord.TextChannel)
    await asyncio.gather(*(channel.send(f"m{n}") for n in range(8)))
    assert fake.max_writes_in_window(GENERAL_ID, 5.0) == 8
    assert fake.rate_limit_refusals(GENERAL_ID) == 0


async def test_allowed_mentions_decide_who_is_pinged(fake: FakeDiscord, client: _Client) -> None:
    channel = client.get_channel(GENERAL_ID)
    assert isinstance(channel, discord.TextChannel)
    text = f"@everyone <@{ALICE_ID}> <@&{GENERAL_ID}>"

    quiet = await channel.send(text)  # the client-wide AllowedMentions.none()
    loud = await channel.send(text, allowed_mentions=discord.AllowedMentions.all())

    assert fake.messages[quiet.id].allowed_mentions == {"parse": []}
    assert not fake.messages[quiet.id].pings
    assert fake.messages[loud.id].pings.everyone
    assert ALICE_ID in fake.messages[loud.id].pings.users


async def test_slash_command_sync_and_interaction(fake: FakeDiscord, client: _Client) -> None:
    assert [c["name"] for c in fake.commands[None]] == ["ping", "draw"]
    guild = discord.Object(GUILD_ID)
    client.tree.copy_global_to(guild=guild)
    assert [c.name for c in await client.tree.sync(guild=guild)] == ["ping", "draw"]
    assert [c["name"] for c in fake.commands[GUILD_ID]] == ["ping", "draw"]
    interaction = await fake.push_interaction("ping", {"text": "hi"}, user=ALICE_ID)
    assert await fake.wait_answered(interaction) == "pong hi"
    assert interaction.callback is not None and interaction.callback["type"] == 4


async def test_a_reconnect_resumes_the_session(fake: FakeDiscord, client: _Client) -> None:
    await fake.reconnect_clients()
    await fake.wait_for(lambda: fake.resumed == 1 and fake.connected)
    await fake.push_message("after the resume")
    assert (await _next_from(client, BOB_ID)).content == "after the resume"
    assert len(fake.identify_payloads) == 1


async def test_disabled_message_content_intent_closes_with_4014() -> None:
    async with FakeDiscord(enabled_intents=()) as fake:
        client = _Client()
        async with _running(fake, client) as task:
            with pytest.raises(discord.PrivilegedIntentsRequired):
                await asyncio.wait_for(asyncio.shield(task), WAIT)
        assert fake.gateway_closes == [4014]


async def test_without_the_intent_guild_messages_arrive_empty() -> None:
    async with FakeDiscord() as fake:
        client = _Client()
        client._connection._intents.message_content = False  # a bot that did not ask for it
        async with _running(fake, client):
            await fake.wait_connected()
            await fake.push_message("secret")
            await fake.push_message(f"<@{BOT_ID}> visible")
            assert (await _next_from(client, BOB_ID)).content == ""
            assert (await _next_from(client, BOB_ID)).content == f"<@{BOT_ID}> visible"


# -- attachments users send, fetched from the fake's CDN by discord.py ----------------------------

PNG = b"\x89PNG\r\n\x1a\n" + bytes(range(256)) * 64


async def test_image_attachment_reads_byte_exact(fake: FakeDiscord, client: _Client) -> None:
    image = Attachment("my cat.png", PNG, width=640, height=480, description="a cat")
    notes = Attachment("notes.md", "# héllo\n".encode())
    await fake.push_message("look", author=ALICE_ID, attachments=[image, notes])
    message = await _next_from(client, ALICE_ID)
    picture, text = message.attachments
    assert picture.filename == "my_cat.png"  # Discord's file-name rule
    assert (picture.content_type, picture.width, picture.height) == ("image/png", 640, 480)
    assert (picture.size, picture.description) == (len(PNG), "a cat")
    assert not picture.is_voice_message() and not message.flags.voice
    assert await picture.read() == PNG
    assert await picture.read(use_cached=True) == PNG  # through proxy_url
    assert picture.url != picture.proxy_url
    assert text.content_type == "text/markdown; charset=utf-8" and text.width is None
    assert (await text.read()).decode() == "# héllo\n"
    fetched = fake.calls_to("GET", r"/(media/)?attachments/\d+/\d+/.+")
    assert [c.status for c in fetched] == [200, 200, 200]


async def test_voice_message_flags_and_duration_parse(fake: FakeDiscord, client: _Client) -> None:
    opus = b"OggS\0\2" + bytes(300)
    waveform = bytes([0, 64, 128, 255])
    await fake.push_voice_message(opus, duration_secs=2.5, waveform=waveform)
    message = await _next_from(client, BOB_ID)
    (recording,) = message.attachments
    assert message.flags.voice and message.content == ""
    assert recording.is_voice_message()
    assert (recording.duration, recording.waveform) == (2.5, waveform)
    assert (recording.filename, recording.content_type) == ("voice-message.ogg", "audio/ogg")
    assert await recording.read() == opus


async def test_attachment_urls_are_signed_and_failures_injectable(
    fake: FakeDiscord, client: _Client
) -> None:
    await fake.push_message("", attachments=[Attachment("a.txt", b"text")])
    (attachment,) = (await _next_from(client, BOB_ID)).attachments
    unsigned = attachment.url.split("?")[0]
    forged = attachment.url.replace("hm=", "hm=0")
    async with aiohttp.ClientSession() as http:
        for url in (unsigned, forged, attachment.url.replace("a.txt", "b.txt")):
            async with http.get(url) as response:
                assert (response.status, await response.text()) == (404, CONTENT_GONE)
        async with http.get(attachment.url) as response:
            assert response.headers["Content-Type"] == "text/plain; charset=utf-8"
            assert await response.read() == b"text"
    fake.fail("GET", r"/attachments/.*", status=503)
    with pytest.raises(discord.HTTPException) as info:
        await attachment.read()
    assert info.value.status == 503
    assert await attachment.read() == b"text"  # the outage was one request long


async def test_attachments_need_what_discord_always_sends(fake: FakeDiscord) -> None:
    with pytest.raises(ValueError, match="width and height"):
        await fake.push_message("", attachments=[Attachment("x.png", PNG)])
    with pytest.raises(ValueError, match="duration_secs and a waveform"):
        await fake.push_message("", attachments=[Attachment("v.ogg", b"", duration_secs=1.0)])


async def test_files_upload_as_multipart_and_are_kept(fake: FakeDiscord, client: _Client) -> None:
    channel = client.get_partial_messageable(GENERAL_ID)
    sent = await channel.send(
        "two files",
        files=[
            discord.File(io.BytesIO(PNG), filename="a.png"),
            discord.File(io.BytesIO(b"print(1)\n"), filename="b.py"),
        ],
    )
    stored = fake.messages[sent.id]
    assert stored.content == "two files"
    assert [(f.filename, f.data) for f in stored.files] == [("a.png", PNG), ("b.py", b"print(1)\n")]
    (call,) = fake.calls_to("POST", r"/channels/\d+/messages")
    assert call.content_type is not None and call.content_type.startswith("multipart/form-data")
    assert call.body["content"] == "two files"  # payload_json
    # The message's attachments are served like a user's: discord.py reads them back.
    assert [await a.read() for a in sent.attachments] == [PNG, b"print(1)\n"]
    alone = await channel.send(file=discord.File(io.BytesIO(PNG), filename="c.png"))
    assert fake.messages[alone.id].content == "" and fake.messages[alone.id].files


async def test_an_interaction_follow_up_carries_a_file(fake: FakeDiscord, client: _Client) -> None:
    interaction = await fake.push_interaction("draw", {"size": "5000"})
    assert await fake.wait_answered(interaction) == "5000 bytes"
    (followup,) = interaction.followups
    (upload,) = fake.messages[followup].files
    assert (upload.filename, len(upload.data)) == ("drawn.png", 5000)


async def test_uploads_over_10_mib_are_refused_and_only_two_routes_take_them(
    fake: FakeDiscord, client: _Client
) -> None:
    channel = client.get_partial_messageable(GENERAL_ID)
    big = discord.File(io.BytesIO(bytes(MAX_UPLOAD_BYTES + 1)), filename="big.bin")
    with pytest.raises(discord.HTTPException) as refused:
        await channel.send(file=big)
    assert (refused.value.status, refused.value.code) == (413, 40005)
    halves = [
        discord.File(io.BytesIO(bytes(MAX_UPLOAD_BYTES // 2 + 1)), f"{i}.bin") for i in (1, 2)
    ]
    with pytest.raises(discord.HTTPException) as together:
        await channel.send(files=halves)  # the limit is per request, not per file
    assert together.value.code == 40005
    assert not fake.bot_messages()
    form = aiohttp.FormData()
    form.add_field("payload_json", '{"content": "hi"}', content_type="application/json")
    headers = {"Authorization": f"Bot {fake.token}"}
    async with aiohttp.ClientSession() as session:
        url = f"{fake.api_base}/users/@me/channels"
        async with session.post(url, data=form, headers=headers) as response:
            assert (response.status, (await response.json())["code"]) == (400, 50109)


async def test_expired_attachment_urls_are_gone(fake: FakeDiscord, client: _Client) -> None:
    await fake.push_message("", attachments=[Attachment("a.txt", b"text")])
    (attachment,) = (await _next_from(client, BOB_ID)).attachments
    fake.expire_attachment_urls()
    with pytest.raises(discord.NotFound):
        await attachment.read()
    await fake.push_message("", attachments=[Attachment("b.txt", b"new")])
    (fresh,) = (await _next_from(client, BOB_ID)).attachments
    assert await fresh.read() == b"new"
