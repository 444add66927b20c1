"""npc_voice.client (sync + asyncio), and a client built from the .proto file alone."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import textwrap
from pathlib import Path

import grpc
import numpy as np
import pytest
from conftest import DaemonThread

from npc_voice.client import AsyncNpcVoiceClient, NpcVoiceClient, collect
from npc_voice.v1 import npc_voice_pb2 as pb

PROTO = Path(__file__).resolve().parent.parent / "proto" / "npc_voice" / "v1" / "npc_voice.proto"


def test_sync_client(daemon: DaemonThread) -> None:
    with NpcVoiceClient(daemon.address) as c:
        assert c.health() and c.health("npc_voice.v1.NpcVoice")
        pcm, rate, marks = c.speak_to_array("Hello there.", "guard/client", sample_rate=24000, encoding="f32le")
        assert rate == 24000 and pcm.dtype == np.float32 and len(pcm) > 0 and marks.phonemes
        line = collect(c.speak("Hello there.", "guard/client2", speed=1.5, volume=0.5, request_id="q"))
        assert line.start.request_id == "q" and line.end.reason == pb.END_REASON_COMPLETED
        conv = list(c.converse([pb.ConverseRequest(text="Hi there."), pb.ConverseRequest(close=True)]))
        assert conv[0].HasField("start") and conv[-1].end.reason == pb.END_REASON_COMPLETED
        assert {v.name for v in c.list_voices().voices} == {"tiny", "tiny2"}
        assert c.list_characters().default_character == "guard"
        assert c.stats().slots_total > 0
        assert not c.cancel("guard/client").cancelled
        state = c.export_state("guard/client")
        c.import_state("guard/copy", state)
        assert c.export_state("guard/copy") == state
        c.reset("guard/copy")
        assert c.export_state("guard/copy") != state
        with pytest.raises(grpc.RpcError) as info:
            c.speak_to_array("Hello.", "nobody")
        assert info.value.code() == grpc.StatusCode.NOT_FOUND
        with pytest.raises(ValueError, match="'mp3'"):
            c.speak_to_array("Hello.", encoding="mp3")
        long = c.speak("The bridge to the north washed away in the spring floods.", "guard/barge")
        first = [next(long), next(long)]  # StreamStart, then the line is speaking
        barge = collect(c.speak("Stop!", "guard/barge", busy_policy="interrupt"))
        assert barge.end.reason == pb.END_REASON_COMPLETED
        assert collect([*first, *long]).end.reason == pb.END_REASON_INTERRUPTED
        with pytest.raises(ValueError, match="'later'"):
            c.speak_to_array("Hello.", busy_policy="later")


def test_async_client(daemon: DaemonThread) -> None:
    async def scenario() -> tuple[np.ndarray, list[pb.SpeakResponse]]:
        async with AsyncNpcVoiceClient(daemon.address) as c:
            assert await c.health()
            pcm, rate, _ = await c.speak_to_array("Good day.", "merchant/async")
            assert rate == 22050
            call = c.converse()
            await call.write(pb.ConverseRequest(context_id="k", text="One, two."))
            await call.write(pb.ConverseRequest(context_id="k", close=True))
            await call.done_writing()
            events = [e async for e in call]
            assert (await c.stats()).slots_total > 0
            return pcm, events

    pcm, events = asyncio.run(scenario())
    assert len(pcm) > 0
    assert events[0].start.character == "guard" and events[-1].end.reason == pb.END_REASON_COMPLETED
    assert all(e.context_id == "k" for e in events)


def test_a_client_from_the_proto_file_alone(tmp_path: Path, daemon: DaemonThread) -> None:
    """Compile the .proto at test time into a package of another name and call the daemon with it,
    in a separate interpreter that never imports npc_voice: what any other language can do."""
    grpc_tools = pytest.importorskip("grpc_tools")
    out = tmp_path / "gen"
    (out / "wire").mkdir(parents=True)
    (out / "wire" / "npc_voice.proto").write_text(PROTO.read_text(encoding="utf-8"), encoding="utf-8")
    (out / "wire" / "__init__.py").write_text("", encoding="utf-8")
    include = Path(grpc_tools.__file__).parent / "_proto"
    cmd = [sys.executable, "-m", "grpc_tools.protoc", f"-I{out}", f"-I{include}", f"--python_out={out}"]
    cmd += [f"--grpc_python_out={out}", str(out / "wire" / "npc_voice.proto")]
    subprocess.run(cmd, check=True, capture_output=True)
    script = textwrap.dedent(
        f"""
        import sys
        import grpc
        from wire import npc_voice_pb2 as pb, npc_voice_pb2_grpc as rpc
        assert "npc_voice" not in sys.modules
        stub = rpc.NpcVoiceStub(grpc.insecure_channel("{daemon.address}"))
        names = sorted(c.name for c in stub.ListCharacters(pb.ListCharactersRequest()).characters)
        req = pb.SpeakRequest(character="goblin/proto", text="Hello there.",
                              format=pb.AudioFormat(encoding=pb.PCM_S16LE, sample_rate_hz=48000))
        kinds, nbytes, total = [], 0, None
        for r in stub.Speak(req):
            kinds.append(r.WhichOneof("event"))
            if r.HasField("audio"):
                nbytes += len(r.audio.pcm)
            if r.HasField("end"):
                total = r.end.total_samples
        assert kinds[0] == "start" and kinds[-1] == "end", kinds
        assert nbytes == 2 * total > 0, (nbytes, total)
        print("OK", ",".join(names), total)
        """
    )
    result = subprocess.run(
        [sys.executable, "-c", script],
        cwd=out,
        capture_output=True,
        text=True,
        timeout=120,
        env={"PYTHONPATH": str(out)},
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("OK goblin,guard,merchant ")
