"""Voice notes to text over real HTTP against the fake server's `/audio/transcriptions`: the
form OpenAI reads, the key only where it belongs, and every failure of the endpoint (down,
slow, 500, 401, 404, a refused format, an empty transcript) told to the user in one line."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from core import errors
from core.audio import PreparedAudio, request_transcript, transcribe, transcription_key
from core.config import CoreSettings
from tests.audio_support import needs_ffmpeg, tone
from tests.core_support import closed_port
from tests.fakes.llm_server import FakeLLMServer, Script

KEY = "sk-transcribe-0123456789"
OGG_HEADER = b"OggS" + b"\x00" * 60  # enough for the sniffer; the fake does not decode audio
VOICE = PreparedAudio(OGG_HEADER, "audio.ogg", "audio/ogg")


def settings_for(base_url: str | None, **values: Any) -> CoreSettings:
    values.setdefault("transcribe_api_key", KEY)
    return CoreSettings(_env_file=None, transcribe_base_url=base_url, **values)


@pytest.fixture
async def fake() -> AsyncIterator[FakeLLMServer]:
    async with FakeLLMServer(require_key=KEY) as server:
        yield server


async def test_the_request_is_openais_multipart_form_with_the_bearer_key(
    fake: FakeLLMServer,
) -> None:
    fake.enqueue(Script(pieces=["  Hello ", "there.  "]))
    settings = settings_for(fake.base_url, transcribe_model="whisper-large-v3")
    text = await request_transcript(VOICE, settings, language="de")
    assert text == "Hello there."
    (seen,) = fake.requests
    assert (seen.method, seen.path) == ("POST", "/v1/audio/transcriptions")
    assert seen.headers["authorization"] == f"Bearer {KEY}"
    assert seen.headers["content-type"].startswith("multipart/form-data; boundary=")
    assert seen.json == {"model": "whisper-large-v3", "response_format": "json", "language": "de"}
    upload = seen.files["file"]
    assert (upload.filename, upload.content_type, upload.data) == (
        "audio.ogg",
        "audio/ogg",
        OGG_HEADER,
    )


async def test_without_a_language_none_is_sent(fake: FakeLLMServer) -> None:
    await request_transcript(VOICE, settings_for(fake.base_url))
    assert "language" not in fake.requests[0].json
    assert fake.requests[0].json["model"] == "whisper-1"  # the default TRANSCRIBE_MODEL


async def test_a_plain_text_answer_is_read_too(fake: FakeLLMServer) -> None:
    """Some self-hosted servers answer text whatever was asked; the fake's `text` format."""
    async with httpx.AsyncClient() as client:
        response = await client.post(
            f"{fake.base_url}/audio/transcriptions",
            data={"model": "m", "response_format": "text"},
            files={"file": ("a.ogg", OGG_HEADER, "audio/ogg")},
            headers={"Authorization": f"Bearer {KEY}"},
        )
    assert response.headers["content-type"].startswith("text/plain")
    assert response.text == "transcript of a.ogg (64 bytes)\n"


@needs_ffmpeg
async def test_a_voice_note_end_to_end_goes_as_it_came(fake: FakeLLMServer, tmp_path: Path) -> None:
    note = tone(tmp_path / "voice.oga", codec="libopus")
    fake.enqueue(Script(pieces=["what is the weather"]))
    heard = await transcribe(
        note, "file_3.oga", "audio/ogg", settings_for(fake.base_url), duration=2
    )
    assert (heard.text, heard.seconds) == ("what is the weather", 2)  # the stated length
    assert fake.requests[0].files["file"].data == note


@needs_ffmpeg
async def test_an_iphone_recording_is_converted_before_it_is_sent(
    fake: FakeLLMServer, tmp_path: Path
) -> None:
    memo = tone(tmp_path / "memo.caf")
    heard = await transcribe(memo, "memo.caf", None, settings_for(fake.base_url))
    upload = fake.requests[0].files["file"]
    assert (upload.filename, upload.content_type) == ("audio.ogg", "audio/ogg")
    assert upload.data.startswith(b"OggS") and upload.data != memo
    assert heard.text == f"transcript of audio.ogg ({len(upload.data)} bytes)"
    assert heard.seconds == pytest.approx(2.0, abs=0.1)  # measured: the memo states none


# -- off, and whose key ---------------------------------------------------------------------------


async def test_voice_notes_are_off_until_transcribe_base_url_is_set(fake: FakeLLMServer) -> None:
    settings = settings_for(None, openai_base_url=fake.base_url, openai_api_key=KEY)
    with pytest.raises(errors.TranscriptionOffError) as caught:
        await transcribe(b"", "voice.oga", "audio/ogg", settings, duration=1)
    assert caught.value.user_hint.startswith("Voice notes are not set up on this bot.")
    assert "TRANSCRIBE_BASE_URL" in str(caught.value)
    assert fake.requests == []  # not even OPENAI_BASE_URL is tried; nor is the audio checked


@pytest.mark.parametrize(
    ("transcribe_url", "openai_url", "expected"),
    [
        ("https://api.openai.com/v1", "https://api.openai.com/v1", "sk-openai"),
        ("https://api.openai.com/v1/", "https://api.openai.com/v1", "sk-openai"),
        ("http://127.0.0.1:9000/v1", "https://api.openai.com/v1", None),
        ("https://api.openai.com.evil.example/v1", "https://api.openai.com/v1", None),
        ("http://api.openai.com/v1", "https://api.openai.com/v1", None),
    ],
    ids=["same-server", "trailing-slash", "self-hosted", "look-alike-host", "other-scheme"],
)
def test_the_openai_key_is_lent_only_to_the_same_server(
    transcribe_url: str, openai_url: str, expected: str | None
) -> None:
    settings = CoreSettings(
        _env_file=None,
        transcribe_base_url=transcribe_url,
        openai_base_url=openai_url,
        openai_api_key="sk-openai",
        transcribe_api_key=None,
    )
    assert transcription_key(settings) == expected


def test_transcribe_api_key_wins_over_the_openai_key() -> None:
    settings = CoreSettings(
        _env_file=None,
        transcribe_base_url="https://api.openai.com/v1",
        openai_api_key="sk-openai",
        transcribe_api_key="sk-own",
    )
    assert transcription_key(settings) == "sk-own"


async def test_a_server_without_a_key_gets_no_authorization_header() -> None:
    async with FakeLLMServer() as open_server:
        settings = settings_for(open_server.base_url, transcribe_api_key=None)
        await request_transcript(VOICE, settings)
        assert "authorization" not in open_server.requests[0].headers


# -- failures -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("script", "status", "hint"),
    [
        (
            Script(status=500, error_message="boom"),
            500,
            "The voice transcription service had an error. Please try again.",
        ),
        (
            Script(status=503, error_message="overloaded"),
            503,
            "The voice transcription service had an error. Please try again.",
        ),
        (
            Script(status=429, error_message="slow down", headers={"Retry-After": "20"}),
            429,
            "The voice transcription service is busy. Please try again in a minute.",
        ),
        (
            Script(status=413, error_message="Maximum content size limit exceeded"),
            413,
            "The voice transcription service could not use this audio (its format or length).",
        ),
    ],
    ids=["500", "503", "429", "413"],
)
async def test_an_error_status_is_one_line_for_the_user(
    fake: FakeLLMServer, script: Script, status: int, hint: str
) -> None:
    fake.enqueue(script)
    with pytest.raises(errors.TranscriptionError) as caught:
        await request_transcript(VOICE, settings_for(fake.base_url))
    assert (caught.value.status_code, caught.value.user_hint) == (status, hint)
    assert script.error_message in str(caught.value)
    assert len(fake.requests) == 1  # an upload is not resent on the user's behalf


async def test_a_wrong_key_tells_the_user_to_tell_the_operator(fake: FakeLLMServer) -> None:
    settings = settings_for(fake.base_url, transcribe_api_key="sk-wrong-key-123")
    with pytest.raises(errors.TranscriptionError) as caught:
        await request_transcript(VOICE, settings)
    assert caught.value.status_code == 401
    assert caught.value.user_hint == (
        "The voice transcription service refused the bot's key. Tell the bot's operator."
    )
    assert "TRANSCRIBE_API_KEY" in str(caught.value)
    assert "sk-wrong-key-123" not in str(caught.value)


async def test_a_format_the_server_refuses_is_a_400_with_its_reason(fake: FakeLLMServer) -> None:
    amr = PreparedAudio(b"#!AMR\n" + b"\x00" * 32, "audio.amr", "audio/amr")
    with pytest.raises(errors.TranscriptionError) as caught:
        await request_transcript(amr, settings_for(fake.base_url))
    assert caught.value.status_code == 400
    assert "Invalid file format" in str(caught.value)
    assert caught.value.user_hint == (
        "The voice transcription service could not use this audio (its format or length)."
    )


async def test_a_base_url_without_the_endpoint_is_a_setup_error(fake: FakeLLMServer) -> None:
    settings = settings_for(fake.base_url.removesuffix("/v1") + "/nope")
    with pytest.raises(errors.TranscriptionError) as caught:
        await request_transcript(VOICE, settings)
    assert caught.value.status_code == 404
    assert caught.value.user_hint == (
        "Voice notes are misconfigured on this bot. Tell the bot's operator."
    )


async def test_an_endpoint_that_is_down_is_one_line() -> None:
    settings = settings_for(f"http://127.0.0.1:{closed_port()}/v1")
    with pytest.raises(errors.TranscriptionError) as caught:
        await request_transcript(VOICE, settings)
    assert caught.value.status_code is None
    assert caught.value.user_hint == (
        "The voice transcription service could not be reached. Please try again later."
    )
    assert "cannot reach" in str(caught.value)


async def test_a_connection_cut_before_the_answer_is_one_line(fake: FakeLLMServer) -> None:
    fake.enqueue(Script(cut_after=0))
    with pytest.raises(errors.TranscriptionError) as caught:
        await request_transcript(VOICE, settings_for(fake.base_url))
    assert caught.value.user_hint.startswith("The voice transcription service could not be reached")


async def test_a_slow_endpoint_times_out_with_its_own_setting(fake: FakeLLMServer) -> None:
    fake.enqueue(Script(first_delay=2.0))
    settings = settings_for(fake.base_url, transcribe_timeout=0.2)
    with pytest.raises(errors.TranscriptionError) as caught:
        await request_transcript(VOICE, settings)
    assert (
        caught.value.user_hint == "The voice transcription service took too long. Please try again."
    )


async def test_an_empty_transcript_is_no_speech(fake: FakeLLMServer) -> None:
    fake.enqueue(Script(pieces=["   "]))
    with pytest.raises(errors.NoSpeechError) as caught:
        await request_transcript(VOICE, settings_for(fake.base_url))
    assert caught.value.user_hint == "No speech was heard in that voice note."
    assert isinstance(caught.value, errors.TranscriptionError)


async def test_an_answer_without_a_transcript_is_an_error(fake: FakeLLMServer) -> None:
    fake.enqueue(Script(raw_sse=b'{"txt": "typo"}', headers={"Content-Type": "application/json"}))
    with pytest.raises(errors.TranscriptionError, match="no transcript"):
        await request_transcript(VOICE, settings_for(fake.base_url))


async def test_a_callers_http_client_is_used_and_left_open(fake: FakeLLMServer) -> None:
    seen: list[str] = []

    async def note(request: httpx.Request) -> None:
        seen.append(request.url.path)

    async with httpx.AsyncClient(event_hooks={"request": [note]}) as client:
        await request_transcript(VOICE, settings_for(fake.base_url), http_client=client)
        assert not client.is_closed
    assert seen == ["/v1/audio/transcriptions"]


async def test_the_describe_line_is_the_hint(fake: FakeLLMServer) -> None:
    fake.enqueue(Script(status=500))
    with pytest.raises(errors.TranscriptionError) as caught:
        await request_transcript(VOICE, settings_for(fake.base_url))
    assert errors.describe(caught.value) == caught.value.user_hint
    assert errors.error_kind(caught.value) == "transcription"


async def test_an_upload_of_several_megabytes_arrives_whole(fake: FakeLLMServer) -> None:
    wav = PreparedAudio(
        b"RIFF\x00\x00\x00\x00WAVE" + bytes(range(256)) * 12_000, "audio.wav", "audio/wav"
    )
    await request_transcript(wav, settings_for(fake.base_url))
    assert fake.requests[0].files["file"].data == wav.data
