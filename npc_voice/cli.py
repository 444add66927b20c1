"""`npc-voice` command line: serve, say, voices, characters (+ train/eval/loadtest when installed).

npc-voice serve [--config F] [--host H] [--port P] [--metrics-port P] [--device auto|cpu|cuda]
                [--tls-cert F --tls-key F] [--token-file F | --token-env VAR]
npc-voice say [--character NAME] [--server ADDR] [--config F] (TEXT | --lines FILE)
              (-o OUT.wav | --out-dir DIR) [--rate R]
npc-voice voices [--config F | --server ADDR]
npc-voice characters [--config F | --server ADDR]
"""

from __future__ import annotations

import os

# Before torch loads: OpenMP's spinning barrier made a 2-thread voice step ~10x slower on a
# shared 2-core machine (bench/README.md, "Threads"); passive waiting costs nothing when idle.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
# numpy's own BLAS threads (the engine's per-tick resampling product) would fight torch's threads
# for the same cores; its products are small, one thread does them best.
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import argparse  # noqa: E402
import asyncio  # noqa: E402
import logging  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
import wave  # noqa: E402
from pathlib import Path  # noqa: E402

import grpc  # noqa: E402
import numpy as np  # noqa: E402

from npc_voice.config import SAMPLE_RATES, ConfigError, load_config  # noqa: E402

log = logging.getLogger("npc_voice.cli")


def write_wav(path: Path, pcm: np.ndarray, rate: int) -> None:
    """Mono 16-bit PCM WAV."""
    path.parent.mkdir(parents=True, exist_ok=True)
    data = (np.clip(pcm, -1.0, 1.0) * 32767.0).round().astype("<i2").tobytes()
    with wave.open(str(path), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes(data)


# ----------------------------------------------------------------------------------------------
# serve


def cmd_serve(args: argparse.Namespace) -> int:
    from npc_voice.server.app import DaemonOptions, serve

    options = DaemonOptions(
        config_path=args.config,
        host=args.host,
        port=args.port,
        metrics_port=args.metrics_port,
        device=args.device,
        tls_cert=args.tls_cert,
        tls_key=args.tls_key,
        token_file=args.token_file,
        token_env=args.token_env,
        freeze_gc=True,
    )
    try:
        asyncio.run(serve(options, on_ready=_print_hint))
    except KeyboardInterrupt:
        pass
    return 0


def _print_hint(host: str, port: int, tls: bool, token: bool) -> None:
    shown = "127.0.0.1" if host in ("0.0.0.0", "::", "[::]", "") else host
    extra = " --token-env NPC_VOICE_TOKEN" if token else ""
    if tls:
        extra += " --tls-ca CERT.pem"
    print(f"npc-voice is serving on {shown}:{port}. Speak a line with:", flush=True)
    exe = sys.argv[0] if Path(sys.argv[0]).name == "npc-voice" else "npc-voice"  # e.g. .venv/bin/npc-voice
    print(f'  {exe} say --server {shown}:{port}{extra} --character guard -o hello.wav "Hello there"', flush=True)


# ----------------------------------------------------------------------------------------------
# say


def _lines_of(args: argparse.Namespace) -> list[str]:
    if args.lines is None:
        return [args.text]
    lines = [ln.strip() for ln in Path(args.lines).read_text(encoding="utf-8").splitlines()]
    return [ln for ln in lines if ln]


def _outputs(args: argparse.Namespace, n: int) -> list[Path]:
    if args.out_dir is not None:
        return [Path(args.out_dir) / f"{i:03d}.wav" for i in range(n)]
    if n != 1:
        raise SystemExit("npc-voice say: --lines needs --out-dir DIR (one WAV per line)")
    return [Path(args.output)]


def _progress(i: int, n: int, path: Path, samples: int, rate: int, t0: float) -> None:
    if n > 1:
        print(
            f"\r[{i + 1}/{n}] {path.name}  {samples / rate:5.2f} s audio  {time.perf_counter() - t0:6.1f} s elapsed",
            end="\n" if i + 1 == n else "",
            file=sys.stderr,
            flush=True,
        )


def cmd_say(args: argparse.Namespace) -> int:
    lines = _lines_of(args)
    if not lines:
        print(f"npc-voice say: no non-empty lines in {args.lines}", file=sys.stderr)
        return 2
    outputs = _outputs(args, len(lines))
    t0 = time.perf_counter()
    if args.server:
        total = _say_remote(args, lines, outputs, t0)
    else:
        total = _say_local(args, lines, outputs, t0)
    wall = time.perf_counter() - t0
    where = outputs[0] if len(outputs) == 1 else Path(args.out_dir)
    print(f"wrote {len(outputs)} file(s) to {where}: {total:.2f} s of audio in {wall:.2f} s", file=sys.stderr)
    return 0


def _say_remote(args: argparse.Namespace, lines: list[str], outputs: list[Path], t0: float) -> float:
    from npc_voice.client import NpcVoiceClient
    from npc_voice.server.auth import read_token

    token = read_token(args.token_file, args.token_env)
    total = 0.0
    with NpcVoiceClient(args.server, token=token, tls_ca=args.tls_ca) as client:
        for i, (line, out) in enumerate(zip(lines, outputs, strict=True)):
            pcm, rate, _ = client.speak_to_array(line, args.character, sample_rate=args.rate)
            write_wav(out, pcm, rate)
            total += len(pcm) / rate
            _progress(i, len(lines), out, len(pcm), rate, t0)
    return total


def _say_local(args: argparse.Namespace, lines: list[str], outputs: list[Path], t0: float) -> float:
    """In-process: an engine of our own, not paced to real time, lines rendered in batches
    (npc_voice.say.render_local, which `npc-voice eval` uses for the characters too)."""
    from npc_voice.engine import resolve_device
    from npc_voice.say import render_local

    total = 0.0
    for i, pcm, rate in render_local(load_config(args.config), args.character, lines, rate=args.rate,
                                     device=str(resolve_device(args.device))):
        write_wav(outputs[i], pcm, rate)
        total += len(pcm) / rate
        _progress(i, len(lines), outputs[i], len(pcm), rate, t0)
    return total


# ----------------------------------------------------------------------------------------------
# voices / characters


def cmd_voices(args: argparse.Namespace) -> int:
    if args.server:
        from npc_voice.client import NpcVoiceClient
        from npc_voice.server.auth import read_token

        with NpcVoiceClient(args.server, token=read_token(args.token_file, args.token_env), tls_ca=args.tls_ca) as c:
            for v in c.list_voices().voices:
                print(f"{v.name:16} {v.native_sample_rate_hz:6d} Hz  {v.parameters:>9,} params  {v.checkpoint}")
                if v.description:
                    print(f"{'':16} {v.description}")
        return 0
    config = load_config(args.config)
    for spec in config.voices.values():
        print(f"{spec.name:16} {spec.kind:10} {spec.path or ''}  {spec.description}")
    return 0


def cmd_characters(args: argparse.Namespace) -> int:
    rows: list[tuple[str, str, float, float, float, float, float, str]] = []
    if args.server:
        from npc_voice.client import NpcVoiceClient
        from npc_voice.server.auth import read_token

        with NpcVoiceClient(args.server, token=read_token(args.token_file, args.token_env), tls_ca=args.tls_ca) as c:
            resp = c.list_characters()
        default = resp.default_character
        for ch in resp.characters:
            rows.append(
                (ch.name, ch.voice, ch.pitch_semitones, ch.formant, ch.speed, ch.breathiness, ch.volume, ch.description)
            )
    else:
        config = load_config(args.config)
        default = config.default_character
        for s in config.characters.values():
            rows.append((s.name, s.voice, s.pitch, s.formant, s.speed, s.breathiness, s.volume, s.description))
    print(f"  {'name':12} {'voice':10} {'pitch':>6} {'formant':>7} {'speed':>5} {'breath':>6} {'vol':>4}  description")
    for name, voice, pitch, formant, speed, breath, vol, desc in rows:
        mark = "*" if name == default else " "
        print(f"{mark} {name:12} {voice:10} {pitch:+6.1f} {formant:7.2f} {speed:5.2f} {breath:6.2f} {vol:4.1f}  {desc}")
    return 0


# ----------------------------------------------------------------------------------------------
# parser


def _add_remote_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--server", metavar="ADDR", help="talk to a running daemon (host:port) instead of in-process")
    p.add_argument("--tls-ca", metavar="PEM", help="with --server: CA certificate to verify the daemon's TLS")
    tok = p.add_mutually_exclusive_group()
    tok.add_argument("--token-file", metavar="F", help="with --server: file holding the shared-secret token")
    tok.add_argument("--token-env", metavar="VAR", help="with --server: environment variable holding the token")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="npc-voice", description="Real-time streaming voices for game characters.")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("serve", help="run the gRPC daemon")
    p.add_argument("--config", metavar="F", help="voices.yaml (default: the embedded one)")
    p.add_argument("--host", help="bind address (default 127.0.0.1, from the config)")
    p.add_argument("--port", type=int, help="port (default 50051; 0 = any free port)")
    p.add_argument(
        "--metrics-port", type=int, metavar="P", help="HTTP /metrics, /healthz, /readyz on this port (0 = off, default)"
    )
    p.add_argument("--device", choices=("auto", "cpu", "cuda"))
    p.add_argument("--tls-cert", metavar="F", help="PEM certificate chain (with --tls-key)")
    p.add_argument("--tls-key", metavar="F", help="PEM private key (with --tls-cert)")
    tok = p.add_mutually_exclusive_group()
    tok.add_argument("--token-file", metavar="F", help="require `authorization: Bearer <token>`; token in this file")
    tok.add_argument("--token-env", metavar="VAR", help="... or in this environment variable")
    p.set_defaults(func=cmd_serve)

    p = sub.add_parser("say", help="speak a line (or a file of lines) into WAV files")
    p.add_argument("text", nargs="?", help="the line to speak")
    p.add_argument("--lines", metavar="FILE", help="one line per non-empty line of FILE -> DIR/000.wav, 001.wav, ...")
    p.add_argument("--character", default="", help="character id (default: the config's default character)")
    p.add_argument("--config", metavar="F", help="voices.yaml for in-process use (default: embedded)")
    p.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"), help="in-process device")
    p.add_argument("-o", "--output", metavar="OUT.wav", help="output WAV (one line)")
    p.add_argument("--out-dir", metavar="DIR", help="output directory (with --lines)")
    p.add_argument("--rate", type=int, default=0, choices=(0, *SAMPLE_RATES), help="sample rate (0 = character's)")
    _add_remote_options(p)
    p.set_defaults(func=cmd_say)

    for name, func, what in (("voices", cmd_voices, "list voices"), ("characters", cmd_characters, "list characters")):
        p = sub.add_parser(name, help=what)
        p.add_argument("--config", metavar="F", help="voices.yaml (default: embedded)")
        _add_remote_options(p)
        p.set_defaults(func=func)

    # Optional command groups; each lands with its own extra and must not break the CLI when absent.
    try:
        from npc_voice.train.cli import register as register_train
    except ImportError:
        pass
    else:
        register_train(sub)
    try:
        from npc_voice.loadtest.cli import register as register_loadtest
    except ImportError:
        pass
    else:
        register_loadtest(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command == "say":
        if (args.text is None) == (args.lines is None):
            parser.error("say: give TEXT or --lines FILE (one of them)")
        if (args.output is None) == (args.out_dir is None):
            parser.error("say: give -o OUT.wav or --out-dir DIR (one of them)")
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    try:
        return int(args.func(args) or 0)
    except ConfigError as e:
        print(f"npc-voice: {e}", file=sys.stderr)
        return 2
    except (LookupError, ValueError, OSError) as e:
        print(f"npc-voice {args.command}: {e}", file=sys.stderr)
        return 1
    except grpc.RpcError as e:
        print(f"npc-voice {args.command}: daemon said {e.code().name}: {e.details()}", file=sys.stderr)  # type: ignore[attr-defined]
        return 1


if __name__ == "__main__":
    sys.exit(main())
