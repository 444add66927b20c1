"""Write hpack_vectors.json: HPACK header blocks and the header lists they decode to.

Shared by the engine bridges' HPACK decoders (Godot, Unity). Each case is a sequence of
header blocks decoded in order by ONE decoder (so dynamic-table references across blocks
are exercised), starting from an empty dynamic table and a SETTINGS_HEADER_TABLE_SIZE of
4096 (the HTTP/2 default):

    {"name": str, "blocks": [hex, ...], "headers": [[[name, value], ...] per block]}

Sources: Python's `hpack` encoder (Huffman on and off, table size updates, never-indexed
fields), the worked examples of RFC 7541 Appendix C (typed in from the RFC, prefixed with a
table size update to 256 where the RFC configures that size), and a few hand-assembled
blocks for representations `hpack` never emits (literal without indexing, a size update to
0 that empties the table). Every block is checked by decoding it with `hpack.Decoder`.

Run: .venv/bin/python engine_bridges/testdata/make_hpack_vectors.py
"""

from __future__ import annotations

import json
import string
from pathlib import Path

from hpack import Decoder, Encoder, HeaderTuple, NeverIndexedHeaderTuple

OUT = Path(__file__).with_name("hpack_vectors.json")

Header = tuple[str, str]

# What a grpcio / grpc-js server sends for a unary or server-streaming response.
GRPC_RESPONSE = [
    (":status", "200"),
    ("content-type", "application/grpc"),
    ("grpc-accept-encoding", "identity, deflate, gzip"),
]
GRPC_OK_TRAILERS = [("grpc-status", "0")]
GRPC_NOT_FOUND_TRAILERS_ONLY = [
    (":status", "200"),
    ("content-type", "application/grpc"),
    ("grpc-status", "5"),
    ("grpc-message", "unknown character 'nobody'"),
]
GRPC_INVALID_TRAILERS = [
    ("grpc-status", "3"),
    # grpc-message is percent-encoded on the wire (gRPC over HTTP/2, "Responses").
    ("grpc-message", "text is empty %E2%80%94 nothing to speak"),
]


def encoded_cases() -> list[tuple[str, list[list[Header]], bool, list[int | None]]]:
    """(name, header lists, huffman, table size to set before each block or None)."""
    printable = "".join(ch for ch in string.printable if ch not in "\t\n\r\x0b\x0c")
    long_value = "x" * 127 + "y" * 200  # length prefixes of 1, 2 and 3 bytes
    return [
        (
            "grpc_stream_plain",
            [GRPC_RESPONSE, GRPC_OK_TRAILERS, GRPC_RESPONSE, GRPC_INVALID_TRAILERS, GRPC_RESPONSE],
            False,
            [None] * 5,
        ),
        (
            "grpc_stream_huffman",
            [GRPC_RESPONSE, GRPC_OK_TRAILERS, GRPC_RESPONSE, GRPC_INVALID_TRAILERS, GRPC_RESPONSE],
            True,
            [None] * 5,
        ),
        (
            "grpc_trailers_only_huffman",
            [GRPC_NOT_FOUND_TRAILERS_ONLY, GRPC_NOT_FOUND_TRAILERS_ONLY, GRPC_RESPONSE, GRPC_OK_TRAILERS],
            True,
            [None] * 4,
        ),
        (
            "huffman_every_printable_ascii",
            [[("x-printable", printable)], [("x-printable", printable), ("x-reversed", printable[::-1])]],
            True,
            [None, None],
        ),
        (
            "long_strings_multibyte_lengths",
            [[("x-" + "n" * 130, long_value)], [("x-" + "n" * 130, long_value), ("x-empty", "")]],
            False,
            [None, None],
        ),
        (
            "long_strings_huffman",
            [[("x-" + "n" * 130, long_value)], [("x-" + "n" * 130, long_value)]],
            True,
            [None, None],
        ),
        (
            "table_size_update_evicts",
            [
                GRPC_RESPONSE + [("x-request-id", "r-000001"), ("x-character", "guard/42")],
                # Shrinking to 100 bytes keeps only the newest entry or two.
                GRPC_RESPONSE + [("x-request-id", "r-000002")],
                GRPC_RESPONSE + [("x-request-id", "r-000002"), ("x-character", "guard/42")],
                # Growing back; the old entries are gone and must be re-sent as literals.
                GRPC_RESPONSE + [("x-character", "guard/42")],
            ],
            True,
            [None, 100, None, 4096],
        ),
        (
            "many_insertions_wrap_table",
            # 60 distinct ~80-byte entries overflow a 4096-byte table: evictions in one block.
            [[(f"x-field-{i:02d}", f"value-{i:02d}-" + "v" * 40) for i in range(60)],
             [(f"x-field-{i:02d}", f"value-{i:02d}-" + "v" * 40) for i in range(30, 60)]],
            True,
            [None, None],
        ),
    ]


def encode_case(blocks: list[list[Header]], huffman: bool, sizes: list[int | None]) -> list[bytes]:
    enc = Encoder()
    out = []
    for headers, size in zip(blocks, sizes, strict=True):
        if size is not None:
            enc.header_table_size = size
        out.append(enc.encode(headers, huffman=huffman))
    return out


def never_indexed_case() -> tuple[str, list[bytes], list[list[Header]]]:
    enc = Encoder()
    block = [HeaderTuple(":status", "200"), NeverIndexedHeaderTuple("authorization", "Bearer s3cr3t-t0ken")]
    raw = [enc.encode(block, huffman=True) for _ in range(2)]
    plain = [(":status", "200"), ("authorization", "Bearer s3cr3t-t0ken")]
    return "never_indexed_huffman", raw, [plain, plain]


def hand_cases() -> list[tuple[str, list[bytes], list[list[Header]]]]:
    """Representations hpack never emits, assembled by hand (RFC 7541 section 6)."""
    # Literal without indexing, indexed name (0000xxxx, name index 31 = content-type).
    lit_no_index = bytes([0x0F, 0x10]) + bytes([16]) + b"application/grpc"
    # Literal without indexing, new name.
    lit_no_index_new = bytes([0x00, 7]) + b"x-trace" + bytes([3]) + b"abc"
    # Literal with incremental indexing, new name -> dynamic index 62, then indexed 0xbe.
    insert = bytes([0x40, 9]) + b"x-session" + bytes([2]) + b"s1"
    # Size update to 0 (empties the table) then back to 4096 (0x3f e1 1f), in one block.
    flush = bytes([0x20, 0x3F, 0xE1, 0x1F])
    return [
        (
            "literal_without_indexing_not_added",
            [lit_no_index + lit_no_index_new, insert + bytes([0xBE]), bytes([0xBE, 0x88])],
            [
                [("content-type", "application/grpc"), ("x-trace", "abc")],
                [("x-session", "s1"), ("x-session", "s1")],
                [("x-session", "s1"), (":status", "200")],
            ],
        ),
        (
            "size_update_zero_empties_table",
            [insert, flush + insert + bytes([0xBE])],
            [[("x-session", "s1")], [("x-session", "s1"), ("x-session", "s1")]],
        ),
    ]


def rfc7541_cases() -> list[tuple[str, list[bytes], list[list[Header]]]]:
    """RFC 7541 Appendix C.3-C.6 (C.5/C.6 after a size update to the RFC's 256 bytes)."""
    h = bytes.fromhex
    req1 = [(":method", "GET"), (":scheme", "http"), (":path", "/"), (":authority", "www.example.com")]
    req2 = req1 + [("cache-control", "no-cache")]
    req3 = [(":method", "GET"), (":scheme", "https"), (":path", "/index.html"),
            (":authority", "www.example.com"), ("custom-key", "custom-value")]
    date1, date2 = "Mon, 21 Oct 2013 20:13:21 GMT", "Mon, 21 Oct 2013 20:13:22 GMT"
    res1 = [(":status", "302"), ("cache-control", "private"), ("date", date1),
            ("location", "https://www.example.com")]
    res2 = [(":status", "307"), ("cache-control", "private"), ("date", date1),
            ("location", "https://www.example.com")]
    res3 = [(":status", "200"), ("cache-control", "private"), ("date", date2),
            ("location", "https://www.example.com"), ("content-encoding", "gzip"),
            ("set-cookie", "foo=ASDJKHQKBZXOQWEOPIUAXQWEOIU; max-age=3600; version=1")]
    size256 = h("3fe101")
    return [
        ("rfc7541_c3_requests_plain", [
            h("828684410f7777772e6578616d706c652e636f6d"),
            h("828684be58086e6f2d6361636865"),
            h("828785bf400a637573746f6d2d6b65790c637573746f6d2d76616c7565"),
        ], [req1, req2, req3]),
        ("rfc7541_c4_requests_huffman", [
            h("828684418cf1e3c2e5f23a6ba0ab90f4ff"),
            h("828684be5886a8eb10649cbf"),
            h("828785bf408825a849e95ba97d7f8925a849e95bb8e8b4bf"),
        ], [req1, req2, req3]),
        ("rfc7541_c5_responses_plain_256", [
            size256 + h("4803333032580770726976617465611d4d6f6e2c203231204f637420323031332032303a31333a"
                        "323120474d546e1768747470733a2f2f7777772e6578616d706c652e636f6d"),
            h("4803333037c1c0bf"),
            h("88c1611d4d6f6e2c203231204f637420323031332032303a31333a323220474d54c05a04677a"
              "69707738666f6f3d4153444a4b48514b425a584f5157454f50495541585157454f49553b206d"
              "61782d6167653d333630303b2076657273696f6e3d31"),
        ], [res1, res2, res3]),
        ("rfc7541_c6_responses_huffman_256", [
            size256 + h("488264025885aec3771a4b6196d07abe941054d444a8200595040b8166e082a62d1bff6e919d"
                        "29ad171863c78f0b97c8e9ae82ae43d3"),
            h("4883640effc1c0bf"),
            h("88c16196d07abe941054d444a8200595040b8166e084a62d1bffc05a839bd9ab77ad94e7821d"
              "d7f2e6c7b335dfdfcd5b3960d5af27087f3672c1ab270fb5291f9587316065c003ed4ee5b106"
              "3d5007"),
        ], [res1, res2, res3]),
    ]


def decode_all(blocks: list[bytes]) -> list[list[Header]]:
    dec = Decoder()
    return [[(str(n), str(v)) for n, v in dec.decode(b)] for b in blocks]


def main() -> None:
    cases: list[dict[str, object]] = []

    def add(name: str, raw: list[bytes], expected: list[list[Header]]) -> None:
        decoded = decode_all(raw)
        if decoded != [list(b) for b in expected]:
            raise SystemExit(f"case {name!r}: hpack decodes to {decoded!r}, expected {expected!r}")
        cases.append({"name": name, "blocks": [b.hex() for b in raw],
                      "headers": [[[n, v] for n, v in b] for b in decoded]})

    for name, blocks, huffman, sizes in encoded_cases():
        add(name, encode_case(blocks, huffman, sizes), blocks)
    for name, raw, expected in [never_indexed_case(), *hand_cases(), *rfc7541_cases()]:
        add(name, raw, expected)
    OUT.write_text(json.dumps(cases, indent=1) + "\n")
    n_blocks = sum(len(c["blocks"]) for c in cases if isinstance(c["blocks"], list))
    print(f"wrote {len(cases)} cases, {n_blocks} blocks to {OUT}")


if __name__ == "__main__":
    main()
