## HTTP/2 and gRPC edge cases against a scripted peer on loopback (a TCPServer in this
## script writing frames by hand): what grpcio never sends but other servers and proxies do.
## Each test returns "ok" or why it failed.
extends RefCounted

const Client = preload("res://addons/npc_voice/client.gd")
const GrpcCall = preload("res://addons/npc_voice/grpc_call.gd")
const Hpack = preload("res://addons/npc_voice/hpack.gd")
const Proto = preload("res://addons/npc_voice/proto.gd")

const DATA := 0
const HEADERS := 1
const RST_STREAM := 3
const SETTINGS := 4
const PING := 6
const GOAWAY := 7
const WINDOW_UPDATE := 8
const CONTINUATION := 9
const WAIT_MS := 10000


## The server side of one connection: raw frames in and out.
class Peer:
	extends RefCounted
	var server := TCPServer.new()
	var conn: StreamPeerTCP
	var inbuf := PackedByteArray()
	var preface_seen := false
	var frames: Array = []  # [type, flags, stream id, payload] from the client, in order
	var decoder := Hpack.Decoder.new()

	func _init() -> void:
		server.listen(0, "127.0.0.1")

	func address() -> String:
		return "127.0.0.1:%d" % server.get_local_port()

	func poll() -> void:
		if conn == null and server.is_connection_available():
			conn = server.take_connection()
		if conn == null:
			return
		conn.poll()
		if conn.get_status() != StreamPeerTCP.STATUS_CONNECTED:
			return
		var n := conn.get_available_bytes()
		if n > 0:
			inbuf.append_array(conn.get_partial_data(n)[1])
		if not preface_seen and inbuf.size() >= 24:
			preface_seen = inbuf.slice(0, 24).get_string_from_ascii() == "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
			inbuf = inbuf.slice(24)
		while preface_seen and inbuf.size() >= 9:
			var length := (inbuf[0] << 16) | (inbuf[1] << 8) | inbuf[2]
			if inbuf.size() < 9 + length:
				break
			var sid := ((inbuf[5] & 0x7f) << 24) | (inbuf[6] << 16) | (inbuf[7] << 8) | inbuf[8]
			frames.append([inbuf[3], inbuf[4], sid, inbuf.slice(9, 9 + length)])
			inbuf = inbuf.slice(9 + length)

	func send(type: int, flags: int, sid: int, payload: PackedByteArray) -> void:
		var n := payload.size()
		var head := PackedByteArray([(n >> 16) & 0xff, (n >> 8) & 0xff, n & 0xff, type, flags,
			(sid >> 24) & 0x7f, (sid >> 16) & 0xff, (sid >> 8) & 0xff, sid & 0xff])
		conn.put_data(head + payload)

	func of_type(type: int, sid: int = -1) -> Array:
		return frames.filter(func(f: Array) -> bool: return f[0] == type and (sid < 0 or f[2] == sid))

	## Request headers of a stream, decoded (the client never uses the dynamic table).
	func request_headers(sid: int) -> Dictionary:
		var block := PackedByteArray()
		for f: Array in frames:
			if f[2] == sid and (f[0] == HEADERS or f[0] == CONTINUATION):
				block.append_array(f[3])
		var out := {}
		for h: Array in decoder.decode(block):
			out[h[0]] = h[1]
		return out


func test_names() -> Array:
	var names: Array = []
	for m in get_method_list():
		var n: String = m["name"]
		if n.begins_with("test_") and n != "test_names":
			names.append(n)
	return names


static func _u32(v: int) -> PackedByteArray:
	return PackedByteArray([(v >> 24) & 0xff, (v >> 16) & 0xff, (v >> 8) & 0xff, v & 0xff])


static func _grpc_frame(message: PackedByteArray) -> PackedByteArray:
	return PackedByteArray([0]) + _u32(message.size()) + message


## Poll client and peer until cond() holds or WAIT_MS pass.
static func _until(client: Client, peer: Peer, cond: Callable) -> bool:
	var deadline := Time.get_ticks_msec() + WAIT_MS
	while not cond.call():
		if Time.get_ticks_msec() > deadline:
			return false
		client.poll()
		peer.poll()
		OS.delay_msec(2)
	return true


static func _vectors(name: String) -> Variant:
	var cases: Variant = JSON.parse_string(FileAccess.get_file_as_string("res://tests/testdata/hpack_vectors.json"))
	for c: Dictionary in cases:
		if c["name"] == name:
			return c["blocks"].map(func(h: String) -> PackedByteArray: return h.hex_decode())
	return null


## Handshake, then responses the way grpc-js writes them: Huffman and dynamic-table header
## blocks split over HEADERS + CONTINUATION, padding, a message split across DATA frames,
## a percent-encoded grpc-message, a Trailers-Only error, RST_STREAM, a non-gRPC HTTP error.
func test_scripted_server_edge_cases() -> String:
	var peer := Peer.new()
	var client := Client.new(peer.address())
	client.metadata["authorization"] = "Bearer s3cret"
	var blocks: Array = _vectors("grpc_stream_huffman")  # one decoder: keep this order
	var start_msg: PackedByteArray = (JSON.parse_string(FileAccess.get_file_as_string(
		"res://tests/testdata/proto_vectors.json"))["speak_response_start"] as String).hex_decode()

	var a := client.speak({"text": "One."})
	a.keep_messages = true
	if not _until(client, peer, func() -> bool: return not peer.of_type(DATA, 1).is_empty()):
		return "no request DATA on stream 1; frames: %s" % str(peer.frames.map(func(f: Array) -> int: return f[0]))
	var req := peer.request_headers(1)
	for want: Array in [[":method", "POST"], [":path", "/npc_voice.v1.NpcVoice/Speak"], ["te", "trailers"],
			["content-type", "application/grpc"], ["authorization", "Bearer s3cret"]]:
		if req.get(want[0]) != want[1]:
			return "request header %s = %s, want %s" % [want[0], req.get(want[0]), want[1]]
	peer.send(SETTINGS, 0, 0, PackedByteArray([0, 5, 0, 0, 0x40, 0]))  # MAX_FRAME_SIZE 16384
	peer.send(PING, 0, 0, "pingpong".to_ascii_buffer())
	var acked := func() -> bool:
		return not peer.of_type(SETTINGS).filter(func(f: Array) -> bool: return f[1] == 1).is_empty() \
			and not peer.of_type(PING).is_empty()
	if not _until(client, peer, acked):
		return "SETTINGS or PING not acknowledged"
	if peer.of_type(PING)[0][3].get_string_from_ascii() != "pingpong" or peer.of_type(PING)[0][1] != 1:
		return "bad PING ack %s" % str(peer.of_type(PING)[0])
	# Stream 1: padded HEADERS with priority + CONTINUATION, message over two padded DATA frames.
	var b0: PackedByteArray = blocks[0]
	peer.send(HEADERS, 0x8 | 0x20, 1, PackedByteArray([3]) + _u32(0) + PackedByteArray([15]) + b0.slice(0, 5) + PackedByteArray([0, 0, 0]))
	peer.send(CONTINUATION, 0x4, 1, b0.slice(5))
	var framed := _grpc_frame(start_msg)
	peer.send(DATA, 0x8, 1, PackedByteArray([2]) + framed.slice(0, 7) + PackedByteArray([0, 0]))
	peer.send(DATA, 0, 1, framed.slice(7))
	peer.send(HEADERS, 0x4 | 0x1, 1, blocks[1])
	if not _until(client, peer, a.is_done):
		return "stream 1 did not finish"
	if a.code != 0 or a.messages.size() != 1 or a.messages[0]["start"]["voice"] != "joe":
		return "stream 1: status %d %s, messages %s" % [a.code, a.status_message, str(a.messages)]
	if a.response_headers.get("grpc-accept-encoding") != "identity, deflate, gzip":
		return "Huffman headers decoded as %s" % str(a.response_headers)

	# Stream 3: headers by dynamic-table reference, trailers with a percent-encoded message.
	var b := client.speak({"text": "Two."})
	if not _until(client, peer, func() -> bool: return not peer.of_type(HEADERS, 3).is_empty()):
		return "no stream 3"
	peer.send(HEADERS, 0x4, 3, blocks[2])
	peer.send(HEADERS, 0x4 | 0x1, 3, blocks[3])
	if not _until(client, peer, b.is_done) or b.code != 3 or b.status_message != "text is empty — nothing to speak":
		return "stream 3: status %d %s" % [b.code, b.status_message]

	# Stream 5: Trailers-Only; stream 7: RST_STREAM(REFUSED_STREAM); stream 9: HTTP 503.
	var c := client.speak({"text": "Three."})
	var d := client.speak({"text": "Four."})
	var e := client.speak({"text": "Five."})
	if not _until(client, peer, func() -> bool: return not peer.of_type(HEADERS, 9).is_empty()):
		return "streams 5-9 not opened"
	peer.send(HEADERS, 0x4 | 0x1, 5, Hpack.encode([[":status", "200"], ["content-type", "application/grpc"],
		["grpc-status", "5"], ["grpc-message", "unknown character %27x%27"]]))
	peer.send(RST_STREAM, 0, 7, _u32(7))
	peer.send(HEADERS, 0x4 | 0x1, 9, Hpack.encode([[":status", "503"]]))
	if not _until(client, peer, func() -> bool: return c.is_done() and d.is_done() and e.is_done()):
		return "streams 5-9 did not finish"
	if c.code != 5 or c.status_message != "unknown character 'x'":
		return "Trailers-Only: status %d %s" % [c.code, c.status_message]
	if d.code != 14 or e.code != 14:
		return "RST_STREAM(REFUSED_STREAM) gave %d, HTTP 503 gave %d; want 14 and 14" % [d.code, e.code]
	client.close()
	return "ok"


## Request DATA waits for the peer's window; GOAWAY fails newer streams and the next rpc
## reconnects; a deadline cancels the stream with RST_STREAM and sends grpc-timeout.
func test_scripted_flow_control_goaway_deadline() -> String:
	var peer := Peer.new()
	var client := Client.new(peer.address())
	var text := "x".repeat(200)
	var a := client.speak({"text": text})
	if not _until(client, peer, func() -> bool: return peer.preface_seen and not peer.of_type(HEADERS, 1).is_empty()):
		return "no HEADERS"
	# The client sent up to the default 65535-byte window already; shrink the next stream's.
	peer.send(SETTINGS, 0, 0, PackedByteArray([0, 4]) + _u32(10))  # INITIAL_WINDOW_SIZE 10
	if not _until(client, peer, func() -> bool: return peer.of_type(SETTINGS).any(func(f: Array) -> bool: return f[1] == 1)):
		return "SETTINGS not acknowledged"
	var b := client.speak({"text": text})
	var sent_on_3 := func() -> int:
		return peer.of_type(DATA, 3).reduce(func(acc: int, f: Array) -> int: return acc + f[3].size(), 0)
	_until(client, peer, func() -> bool: return sent_on_3.call() >= 10)
	for i in 20:
		client.poll()
		peer.poll()
		OS.delay_msec(2)
	if sent_on_3.call() != 10:
		return "%d bytes sent into a 10-byte window" % sent_on_3.call()
	peer.send(WINDOW_UPDATE, 0, 3, _u32(1000))
	var request_bytes: int = 5 + (Proto.encode({"text": text}, Proto.SPEAK_REQUEST) as PackedByteArray).size()
	if not _until(client, peer, func() -> bool: return sent_on_3.call() == request_bytes):
		return "after WINDOW_UPDATE %d of %d request bytes arrived" % [sent_on_3.call(), request_bytes]
	if (peer.of_type(DATA, 3)[-1][1] & 1) == 0:
		return "the last request DATA frame lacks END_STREAM"

	peer.send(GOAWAY, 0, 0, _u32(1) + _u32(0))
	if not _until(client, peer, b.is_done) or b.code != 14:
		return "stream 3 after GOAWAY(last 1): status %d" % b.code
	if a.is_done():
		return "stream 1 (<= last stream id) was failed by a graceful GOAWAY"
	var old_peer_conn := peer.conn
	peer.conn = null
	peer.frames.clear()
	peer.preface_seen = false
	peer.inbuf.clear()
	peer.decoder = Hpack.Decoder.new()
	client.stream_deadline_ms = 300
	var c := client.speak({"text": "late"})
	if not _until(client, peer, c.is_done):
		return "deadline did not end the rpc"
	if c.code != 4:
		return "deadline gave status %d %s" % [c.code, c.status_message]
	if peer.conn == null or peer.conn == old_peer_conn:
		return "no new connection after GOAWAY"
	_until(client, peer, func() -> bool: return not peer.of_type(RST_STREAM, 1).is_empty())
	if peer.request_headers(1).get("grpc-timeout") != "300m":
		return "grpc-timeout header: %s" % str(peer.request_headers(1))
	if peer.of_type(RST_STREAM, 1).is_empty():
		return "no RST_STREAM after the deadline"
	client.close()
	return "ok"


## A peer that accepts a stream and then goes silent (no data, no PING ack): the call ends
## UNAVAILABLE through the keepalive PING instead of waiting forever.
func test_scripted_silent_server_fails_by_keepalive() -> String:
	var peer := Peer.new()
	var client := Client.new(peer.address())
	client.keepalive_ms = 200
	client.ping_timeout_ms = 300
	var rpc := client.speak({"text": "Anyone there?"})
	if not _until(client, peer, func() -> bool: return not peer.of_type(HEADERS, 1).is_empty()):
		return "no HEADERS"
	peer.send(SETTINGS, 0, 0, PackedByteArray())
	if not _until(client, peer, rpc.is_done):
		return "the call still waits after %d ms" % WAIT_MS
	if rpc.code != 14 or peer.of_type(PING).filter(func(f: Array) -> bool: return f[1] == 0).is_empty():
		return "status %d %s; client PINGs %d" % [rpc.code, rpc.status_message, peer.of_type(PING).size()]
	client.close()
	return "ok"


## Calls about a character carry x-npc-character (character-affine proxies); calls without
## one, or with an id a header cannot carry, do not. busy_policy goes into the SpeakRequest.
func test_scripted_character_header() -> String:
	var peer := Peer.new()
	var client := Client.new(peer.address())
	client.speak({"character": "guard/1", "text": "a", "busy_policy": Proto.BusyPolicy.INTERRUPT})
	client.converse("merchant/2")
	client.cancel("guard/3")
	client.speak({"text": "the default character"})
	client.converse()
	client.speak({"character": "gärd", "text": "x"})
	if not _until(client, peer, func() -> bool: return not peer.of_type(HEADERS, 11).is_empty() \
			and not peer.of_type(DATA, 1).is_empty()):
		return "not all six calls reached the peer: %s" % str(peer.frames.map(func(f: Array) -> int: return f[2]))
	var want := ["guard/1", "merchant/2", "guard/3", null, null, null]
	for i in want.size():
		var headers := peer.request_headers(1 + 2 * i)
		if headers.get(Client.CHARACTER_HEADER) != want[i]:
			return "stream %d (%s): %s = %s, want %s" % [1 + 2 * i, headers.get(":path"), Client.CHARACTER_HEADER,
				headers.get(Client.CHARACTER_HEADER), want[i]]
	var body: PackedByteArray = peer.of_type(DATA, 1)[0][3]
	if body.slice(5).hex_encode() != "0a0767756172642f311201613002":
		return "SpeakRequest{guard/1, a, busy_policy 2} sent as %s" % body.slice(5).hex_encode()
	client.close()
	return "ok"
