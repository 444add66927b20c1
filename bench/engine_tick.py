"""Engine throughput: ticks/s and real-time streams for N concurrent streams on this machine.

    .venv/bin/python bench/engine_tick.py [--streams 1 16 64] [--seconds 3] [--voice default|tiny|DIR]
                                          [--threads 2] [--k 4] [--paced] [--rate 48000] [--max-load 0.8]

Free-run (default): every stream is stepped every tick (lookahead unbounded), so the wall time
to generate ``--seconds`` of audio per stream measures capacity: real-time streams = N * audio
seconds / wall seconds. ``--paced`` also runs each N at the engine's default 150 ms lookahead
(streams consumed like a real-time player would), reporting underruns and first-audio latency;
``--max-load 0.8`` turns on admission from measured cost there (refused streams: "served" < N).
Streams are consumed from one asyncio loop, as the gRPC server does.
"""
from __future__ import annotations

import argparse
import asyncio
import logging
import statistics
import time

from npc_voice.engine import AudioEvent, CapacityError, EndEvent, Engine, EngineConfig, Stream, VoiceControls
from npc_voice.model import load_voice, tiny_voice
from npc_voice.model.api import SAMPLE_RATE, VoiceModel

LINES = (
    "The old bridge to the north washed away in the spring floods, so you will have to take the mountain pass.",
    "Keep your weapons sheathed inside the city walls, traveller, or the captain will hear of it.",
    "Fresh bread, three copper a loaf! Come and see, the finest wares this side of the river!",
)


def pick_voice(name: str) -> VoiceModel:
    if name == "tiny":
        return tiny_voice(0)
    try:
        return load_voice(None if name == "default" else name)
    except Exception as e:  # an untrained checkout: measure the same code with the tiny model
        logging.warning("could not load voice %r (%s); using tiny_voice", name, e)
        return tiny_voice(0)


async def consume(stream: Stream) -> tuple[int, EndEvent | None]:
    """(samples, EndEvent), or (0, None) when the engine refused the stream (CapacityError)."""
    samples = 0
    try:
        async for event in stream.events():
            if isinstance(event, AudioEvent):
                samples += len(event.pcm)
            elif isinstance(event, EndEvent):
                return samples, event
    except CapacityError:
        return 0, None
    raise RuntimeError("stream ended without EndEvent")


async def run_streams(
    engine: Engine, n: int, seconds: float, rate: int
) -> tuple[list[tuple[int, EndEvent | None]], float]:
    start = time.monotonic()
    streams = []
    for i in range(n):  # like the server: open, say, end_input per request
        stream = engine.open_stream(f"npc/{i}", "v", VoiceControls(), {}, rate, f"bench-{i}")
        for j in range(max(1, round(seconds / 5.0 + 0.49))):  # enough lines for ``seconds`` (~5 s a line)
            stream.say(LINES[(i + j) % len(LINES)])
        stream.end_input()
        streams.append(stream)
    results = await asyncio.gather(*(consume(s) for s in streams))
    return list(results), time.monotonic() - start


def measure(model: VoiceModel, n: int, seconds: float, k: int, threads: int, lookahead_ms: float,
            rate: int = SAMPLE_RATE, max_load: float = 0.0) -> dict[str, float]:
    config = EngineConfig(slots=n + 1, frames_per_tick=k, threads=threads, lookahead_ms=lookahead_ms,
                          max_queue_wait_s=30.0 if max_load == 0 else 1.0, max_load=max_load)
    with Engine({"v": model}, config) as engine:
        all_results, wall = asyncio.run(run_streams(engine, n, seconds, rate))
        stats = engine.stats()
    results = [(s, e) for s, e in all_results if e is not None]
    audio_s = statistics.fmean(s for s, _ in results) / rate
    return {
        "streams": n,
        "ticks_per_s": stats.ticks / wall,
        "tick_ms_mean": stats.tick_ms_mean,
        "tick_ms_p99": stats.tick_ms_p99,
        "audio_s": audio_s,
        "wall_s": wall,
        "rtf": audio_s / wall,  # audio seconds per wall second, per stream
        "rt_streams": len(results) * audio_s / wall,
        "served": len(results),
        "first_audio_ms_p50": statistics.median(e.first_audio_ms for _, e in results),
        "first_audio_ms_max": max(e.first_audio_ms for _, e in results),
        "underruns": stats.underruns,
    }


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--streams", type=int, nargs="+", default=[1, 16, 64])
    p.add_argument("--seconds", type=float, default=3.0, help="audio per stream (rounded up to whole lines)")
    p.add_argument("--voice", default="default", help="default | tiny | voice directory")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--k", type=int, default=4, help="frames per tick")
    p.add_argument("--paced", action="store_true", help="also run at the default 150 ms lookahead")
    p.add_argument("--rate", type=int, default=SAMPLE_RATE, help="output sample rate (resampled if not 22050)")
    p.add_argument("--max-load", type=float, default=0.0, help="paced runs: admission from measured cost (0 = off)")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    model = pick_voice(args.voice)
    print(f"voice {model.name} ({model.version}), K={args.k}, {args.threads} threads, device {model.device}, "
          f"output {args.rate} Hz")
    modes = [("free-run", 1e9, 0.0)] + ([("paced 150ms", 150.0, args.max_load)] if args.paced else [])
    header = (f"{'mode':<12} {'N':>5} {'ticks/s':>8} {'tick ms':>8} {'p99 ms':>8} {'audio s':>8} {'wall s':>7} "
              f"{'x RT':>6} {'RT streams':>10} {'1st ms p50':>10} {'1st max':>8} {'underruns':>9} {'served':>6}")
    print(header)
    for mode, lookahead, max_load in modes:
        for n in args.streams:
            r = measure(model, n, args.seconds, args.k, args.threads, lookahead, args.rate, max_load)
            print(f"{mode:<12} {n:>5} {r['ticks_per_s']:>8.1f} {r['tick_ms_mean']:>8.2f} {r['tick_ms_p99']:>8.2f} "
                  f"{r['audio_s']:>8.2f} {r['wall_s']:>7.2f} {r['rtf']:>6.2f} {r['rt_streams']:>10.1f} "
                  f"{r['first_audio_ms_p50']:>10.1f} {r['first_audio_ms_max']:>8.1f} {r['underruns']:>9.0f} "
                  f"{r['served']:>6.0f}",
                  flush=True)


if __name__ == "__main__":
    main()
