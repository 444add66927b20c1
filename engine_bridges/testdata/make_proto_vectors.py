"""Write proto_vectors.json: npc_voice.v1 messages serialized by the official protobuf runtime.

The engine bridges carry their own protobuf code; these bytes are the reference they are
checked against. Each entry maps a name to the hex of one serialized message; the bridges'
tests build the same message by hand (the values are listed in the docstring of each case
below) and compare both ways: their encoding must equal these bytes, and decoding these
bytes must give back the values.

Run: .venv/bin/python engine_bridges/testdata/make_proto_vectors.py
"""

from __future__ import annotations

import json
from pathlib import Path

from npc_voice.v1 import npc_voice_pb2 as pb

OUT = Path(__file__).with_name("proto_vectors.json")

# An unknown varint field (number 15) and an unknown length-delimited field (number 16):
# a newer daemon may send fields an older client does not know; they must be skipped.
# (Keys are varints too: field 16's key 130 takes two bytes.)
UNKNOWN_FIELDS = bytes([15 << 3 | 0, 0xAC, 0x02, 0x82, 0x01, 3]) + b"new"


def cases() -> dict[str, bytes]:
    pcm = bytes(range(256))
    return {
        # SpeakRequest{character "guard/42", text "Halt! Who goes there? é", format {PCM_F32LE, 48000},
        #   request_id "r-1", overrides {speed 1.25, pitch_semitones -2, volume 0 (explicitly set)}}
        "speak_request": pb.SpeakRequest(
            character="guard/42",
            text="Halt! Who goes there? é",
            format=pb.AudioFormat(encoding=pb.PCM_F32LE, sample_rate_hz=48000),
            request_id="r-1",
            overrides=pb.VoiceOverrides(speed=1.25, pitch_semitones=-2.0, volume=0.0),
        ).SerializeToString(),
        # SpeakRequest{character "guard/42", text "Hi.", busy_policy INTERRUPT (2)}
        "speak_request_busy": pb.SpeakRequest(
            character="guard/42", text="Hi.", busy_policy=pb.BUSY_POLICY_INTERRUPT
        ).SerializeToString(),
        # SpeakRequest{text "Hi."}: every other field left at its default is not written.
        "speak_request_minimal": pb.SpeakRequest(text="Hi.").SerializeToString(),
        # ConverseRequest{context_id "c1", config {character "merchant", max_buffer_delay_ms 250}}
        "converse_request_config": pb.ConverseRequest(
            context_id="c1", config=pb.ConverseConfig(character="merchant", max_buffer_delay_ms=250)
        ).SerializeToString(),
        # ConverseRequest{text "Well met, "}, ConverseRequest{close true}: oneof members
        "converse_request_text": pb.ConverseRequest(text="Well met, ").SerializeToString(),
        "converse_request_close": pb.ConverseRequest(close=True).SerializeToString(),
        # CancelRequest{character "guard/42", request_id "r-1"}
        "cancel_request": pb.CancelRequest(character="guard/42", request_id="r-1").SerializeToString(),
        # CancelResponse{cancelled true, samples_produced 12345}
        "cancel_response": pb.CancelResponse(cancelled=True, samples_produced=12345).SerializeToString(),
        # SpeakResponse{start {format {PCM_S16LE, 22050}, request_id "r-1", character "guard/42", voice "joe"}}
        "speak_response_start": pb.SpeakResponse(
            start=pb.StreamStart(
                format=pb.AudioFormat(encoding=pb.PCM_S16LE, sample_rate_hz=22050),
                request_id="r-1",
                character="guard/42",
                voice="joe",
            )
        ).SerializeToString(),
        # SpeakResponse{context_id "c1", audio {pcm bytes 0..255, sample_offset 5000000000}} + unknown fields
        "speak_response_audio": pb.SpeakResponse(
            context_id="c1", audio=pb.AudioChunk(pcm=pcm, sample_offset=5_000_000_000)
        ).SerializeToString()
        + UNKNOWN_FIELDS,
        # SpeakResponse{marks {phonemes [h 0..256, ɔ 256..1024], visemes [sil 0..256, aa 256..1024],
        #   words [Halt 0..1024]}}
        "speak_response_marks": pb.SpeakResponse(
            marks=pb.Marks(
                phonemes=[pb.Mark(label="h", start_sample=0, end_sample=256),
                          pb.Mark(label="ɔ", start_sample=256, end_sample=1024)],
                visemes=[pb.Mark(label="sil", start_sample=0, end_sample=256),
                         pb.Mark(label="aa", start_sample=256, end_sample=1024)],
                words=[pb.Mark(label="Halt", start_sample=0, end_sample=1024)],
            )
        ).SerializeToString(),
        # SpeakResponse{end {reason CANCELLED, total_samples 44100,
        #   timings {queued_ms 0.5, first_audio_ms 12.25, total_ms 2000, audio_ms 2000}, request_id "r-1"}}
        "speak_response_end": pb.SpeakResponse(
            end=pb.StreamEnd(
                reason=pb.END_REASON_CANCELLED,
                total_samples=44100,
                timings=pb.Timings(queued_ms=0.5, first_audio_ms=12.25, total_ms=2000.0, audio_ms=2000.0),
                request_id="r-1",
            )
        ).SerializeToString(),
        # SpeakResponse{end {reason INTERRUPTED (3), total_samples 1000, request_id "r-2"}}
        "speak_response_end_interrupted": pb.SpeakResponse(
            end=pb.StreamEnd(reason=pb.END_REASON_INTERRUPTED, total_samples=1000, request_id="r-2")
        ).SerializeToString(),
    }


def main() -> None:
    data = {name: raw.hex() for name, raw in cases().items()}
    check = pb.SpeakResponse.FromString(bytes.fromhex(data["speak_response_audio"]))
    # Re-serializing keeps unknown fields: the bytes round-trip only if they parsed as fields.
    if check.audio.sample_offset != 5_000_000_000 or check.SerializeToString().hex() != data["speak_response_audio"]:
        raise SystemExit(f"speak_response_audio does not parse as intended: {check!r}")
    OUT.write_text(json.dumps(data, indent=1, ensure_ascii=True) + "\n")
    print(f"wrote {len(data)} messages to {OUT}")


if __name__ == "__main__":
    main()
