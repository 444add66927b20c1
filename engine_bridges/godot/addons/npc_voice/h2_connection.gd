## One HTTP/2 cleartext connection with prior knowledge (RFC 9113, "h2c"), driven by poll().
##
## Never blocks: the socket is non-blocking, reads take what is available, writes go through
## an outgoing buffer flushed with put_partial_data. Streams are opened by a listener object
## (grpc_call.gd) that receives:
##   _on_h2_headers(headers: Array, end_stream: bool)
##   _on_h2_data(data: PackedByteArray, end_stream: bool)
##   _on_h2_closed(grpc_code: int, message: String)   # reset, GOAWAY or connection loss
## The connection holds its listeners weakly: whoever started a call keeps it alive.
## Flow control: we advertise `window_size` for every stream and the connection, and send
## WINDOW_UPDATEs once half of a window has been consumed; outgoing DATA respects the
## peer's windows and frame size.
extends RefCounted

const Hpack = preload("hpack.gd")

const PREFACE := "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
enum FrameType { DATA, HEADERS, PRIORITY, RST_STREAM, SETTINGS, PUSH_PROMISE, PING, GOAWAY, WINDOW_UPDATE, CONTINUATION }
const FLAG_END_STREAM := 0x1
const FLAG_ACK := 0x1
const FLAG_END_HEADERS := 0x4
const FLAG_PADDED := 0x8
const FLAG_PRIORITY := 0x20
const SETTINGS_HEADER_TABLE_SIZE := 1
const SETTINGS_ENABLE_PUSH := 2
const SETTINGS_MAX_CONCURRENT_STREAMS := 3
const SETTINGS_INITIAL_WINDOW_SIZE := 4
const SETTINGS_MAX_FRAME_SIZE := 5
const ERR_NO_ERROR := 0
const ERR_PROTOCOL := 1
const ERR_FLOW_CONTROL := 3
const ERR_FRAME_SIZE := 6
const ERR_CANCEL := 8
const ERR_COMPRESSION := 9
const DEFAULT_WINDOW := 65535
const MAX_FRAME := 16384  # what we accept (the default; we do not raise it)
## gRPC status codes used for transport failures.
const GRPC_UNAVAILABLE := 14
const GRPC_INTERNAL := 13

enum State { CONNECTING, OPEN, CLOSED }

var host: String
var port: int
var state := State.CONNECTING
## Why the connection closed ("" while open).
var close_reason := ""
## Counters for tests and diagnostics.
var stats := {"window_updates_sent": 0, "pings_acked": 0, "settings_acked": 0, "data_bytes_in": 0, "streams_opened": 0}

var _tcp := StreamPeerTCP.new()
var _window_size: int
var _connect_deadline_ms: int
## Keepalive: with streams open and nothing heard for keepalive_ms, PING; no answer within
## ping_timeout_ms fails the connection (a dead daemon or network ends calls, not hangs them).
var keepalive_ms := 20000
var ping_timeout_ms := 10000
var _last_heard_ms := 0
var _ping_sent_ms := 0  # 0 = no PING outstanding
var _settings_received := false
var _goaway := false
var _in := PackedByteArray()
var _out := PackedByteArray()
var _decoder := Hpack.Decoder.new(4096)
var _streams := {}  # stream id -> _Stream
var _waiting: Array = []  # _Stream not yet opened (MAX_CONCURRENT_STREAMS reached)
var _next_id := 1
var _send_window := DEFAULT_WINDOW  # connection-level, ours to spend
var _peer_initial_window := DEFAULT_WINDOW
var _peer_max_frame := 16384
var _peer_max_streams := 1 << 30
var _conn_unacked := 0  # received DATA bytes not yet returned with a WINDOW_UPDATE
var _conn_window := DEFAULT_WINDOW  # the connection window we granted
var _header_stream := 0  # stream whose header block is being continued, 0 = none
var _header_block := PackedByteArray()
var _header_end_stream := false


class _Stream:
	extends RefCounted
	var id := 0
	## Weak, so a call and its stream do not keep each other alive (RefCounted cycles leak).
	var listener: WeakRef
	var headers: Array
	var send_window := 0
	var unacked := 0  # received DATA bytes not yet returned with a WINDOW_UPDATE
	var pending := PackedByteArray()  # DATA waiting for flow-control window
	var end_pending := false  # send END_STREAM once `pending` is out
	var local_closed := false


func _init(host_name: String, port_number: int, window_size: int = 4 << 20, connect_timeout_ms: int = 5000) -> void:
	host = host_name
	port = port_number
	_window_size = clampi(window_size, 1, 0x7fffffff)
	_connect_deadline_ms = Time.get_ticks_msec() + connect_timeout_ms
	var err := _tcp.connect_to_host(host, port)
	if err != OK:
		_fail(GRPC_UNAVAILABLE, "cannot connect to %s:%d (%s)" % [host, port, error_string(err)])
		return
	_tcp.set_no_delay(true)
	_out.append_array(PREFACE.to_ascii_buffer())
	var settings := PackedByteArray()
	for pair: Array in [[SETTINGS_ENABLE_PUSH, 0], [SETTINGS_INITIAL_WINDOW_SIZE, _window_size],
			[SETTINGS_HEADER_TABLE_SIZE, 4096]]:
		settings.append_array(_u16(pair[0]))
		settings.append_array(_u32(pair[1]))
	_frame(FrameType.SETTINGS, 0, 0, settings)
	if _window_size > DEFAULT_WINDOW:
		_frame(FrameType.WINDOW_UPDATE, 0, 0, _u32(_window_size - DEFAULT_WINDOW))
		_conn_window = _window_size


## True while new streams can be opened here.
func is_usable() -> bool:
	return state != State.CLOSED and not _goaway


func active_streams() -> int:
	return _streams.size() + _waiting.size()


## Open a stream: HEADERS now (or once a concurrency slot frees). Returns the _Stream handle.
func open_stream(listener: Object, headers: Array) -> _Stream:
	var s := _Stream.new()
	s.listener = weakref(listener)
	s.headers = headers
	if state == State.CLOSED:
		listener.call_deferred("_on_h2_closed", GRPC_UNAVAILABLE, "connection closed: " + close_reason)
		return s
	_waiting.append(s)
	_open_waiting()
	return s


## Queue DATA on a stream (split and paced by flow control); end_stream closes our side.
func send_data(s: _Stream, data: PackedByteArray, end_stream: bool) -> void:
	if s.local_closed or state == State.CLOSED:
		return
	s.pending.append_array(data)
	s.end_pending = s.end_pending or end_stream
	if s.id != 0:
		_flush_stream(s)
		_flush()


## Abandon a stream: RST_STREAM(CANCEL) if it is open; its listener hears nothing more.
func reset_stream(s: _Stream, code: int = ERR_CANCEL) -> void:
	_waiting.erase(s)
	if s.id != 0 and _streams.has(s.id):
		_streams.erase(s.id)
		if state != State.CLOSED:
			_frame(FrameType.RST_STREAM, 0, s.id, _u32(code))
			_flush()


## Graceful close: GOAWAY, then the socket.
func close(reason: String = "closed by the client") -> void:
	if state == State.CLOSED:
		return
	_frame(FrameType.GOAWAY, 0, 0, _u32(0) + _u32(ERR_NO_ERROR))  # we accept no pushed streams
	_flush()
	_fail(GRPC_UNAVAILABLE, reason)


## Drive the connection: connect, read and dispatch frames, write what is queued.
func poll() -> void:
	if state == State.CLOSED:
		return
	_tcp.poll()
	var status := _tcp.get_status()
	if status == StreamPeerTCP.STATUS_CONNECTING:
		if Time.get_ticks_msec() > _connect_deadline_ms:
			_fail(GRPC_UNAVAILABLE, "timed out connecting to %s:%d" % [host, port])
		return
	if status != StreamPeerTCP.STATUS_CONNECTED:
		_fail(GRPC_UNAVAILABLE, "connection to %s:%d %s" % [host, port,
			"refused or lost" if state == State.CONNECTING else "closed by the peer"])
		return
	if state == State.CONNECTING:
		state = State.OPEN
		_last_heard_ms = Time.get_ticks_msec()
	_flush()
	var available := _tcp.get_available_bytes()
	if available > 0:
		var got: Array = _tcp.get_partial_data(available)
		if got[0] != OK:
			_fail(GRPC_UNAVAILABLE, "read from %s:%d failed (%s)" % [host, port, error_string(got[0])])
			return
		_in.append_array(got[1])
		_last_heard_ms = Time.get_ticks_msec()
		_read_frames()
	if not _settings_received and Time.get_ticks_msec() > _connect_deadline_ms:
		_connection_error(ERR_PROTOCOL, "no SETTINGS from %s:%d: is it an HTTP/2 (gRPC) server?" % [host, port])
		return
	if _goaway and _streams.is_empty() and _waiting.is_empty():
		close("server sent GOAWAY")
	_keepalive()
	_flush()


func _keepalive() -> void:
	var now := Time.get_ticks_msec()
	if _ping_sent_ms > 0 and now - _ping_sent_ms > ping_timeout_ms:
		_fail(GRPC_UNAVAILABLE, "no answer from %s:%d for %d ms (PING unanswered)" % [host, port, now - _last_heard_ms])
	elif _ping_sent_ms == 0 and not _streams.is_empty() and now - _last_heard_ms > keepalive_ms:
		_frame(FrameType.PING, 0, 0, "keepaliv".to_ascii_buffer())
		_ping_sent_ms = now


func _read_frames() -> void:
	var pos := 0
	while state != State.CLOSED and _in.size() - pos >= 9:
		var length := (_in[pos] << 16) | (_in[pos + 1] << 8) | _in[pos + 2]
		if length > MAX_FRAME:
			_connection_error(ERR_FRAME_SIZE, "frame of %d bytes exceeds %d" % [length, MAX_FRAME])
			return
		if _in.size() - pos < 9 + length:
			break
		var type := _in[pos + 3]
		var flags := _in[pos + 4]
		var sid := _u31_at(_in, pos + 5)
		var payload := _in.slice(pos + 9, pos + 9 + length)
		pos += 9 + length
		_on_frame(type, flags, sid, payload)
	_in = _in.slice(pos)


func _on_frame(type: int, flags: int, sid: int, payload: PackedByteArray) -> void:
	if _header_stream != 0 and (type != FrameType.CONTINUATION or sid != _header_stream):
		_connection_error(ERR_PROTOCOL, "frame type %d interrupts the header block of stream %d" % [type, _header_stream])
		return
	match type:
		FrameType.DATA:
			_on_data(flags, sid, payload)
		FrameType.HEADERS:
			var body: Variant = _unpad(flags, payload, 5 if (flags & FLAG_PRIORITY) != 0 else 0)
			if body == null or sid == 0:
				return
			_header_stream = sid
			_header_block = body
			_header_end_stream = (flags & FLAG_END_STREAM) != 0
			if (flags & FLAG_END_HEADERS) != 0:
				_on_header_block()
		FrameType.CONTINUATION:
			if sid == 0 or sid != _header_stream:
				_connection_error(ERR_PROTOCOL, "CONTINUATION on stream %d without HEADERS" % sid)
				return
			_header_block.append_array(payload)
			if (flags & FLAG_END_HEADERS) != 0:
				_on_header_block()
		FrameType.RST_STREAM:
			if payload.size() != 4:
				_connection_error(ERR_FRAME_SIZE, "RST_STREAM of %d bytes" % payload.size())
				return
			var s: _Stream = _streams.get(sid)
			if s != null:
				_streams.erase(sid)
				var code := _u32_at(payload, 0)
				var grpc := 1 if code == ERR_CANCEL else (GRPC_UNAVAILABLE if code == 7 else GRPC_INTERNAL)
				_notify(s, "_on_h2_closed", grpc, "stream reset by the server (HTTP/2 error %d)" % code)
				_open_waiting()
		FrameType.SETTINGS:
			_on_settings(flags, sid, payload)
		FrameType.PUSH_PROMISE:
			_connection_error(ERR_PROTOCOL, "PUSH_PROMISE although push is disabled")
		FrameType.PING:
			if payload.size() != 8:
				_connection_error(ERR_FRAME_SIZE, "PING of %d bytes" % payload.size())
			elif (flags & FLAG_ACK) == 0:
				_frame(FrameType.PING, FLAG_ACK, 0, payload)
				stats["pings_acked"] += 1
			else:
				_ping_sent_ms = 0
		FrameType.GOAWAY:
			_on_goaway(payload)
		FrameType.WINDOW_UPDATE:
			if payload.size() != 4:
				_connection_error(ERR_FRAME_SIZE, "WINDOW_UPDATE of %d bytes" % payload.size())
				return
			var inc := _u31_at(payload, 0)
			if sid == 0:
				_send_window += inc
				for s: _Stream in _streams.values():
					_flush_stream(s)
			elif _streams.has(sid):
				_streams[sid].send_window += inc
				_flush_stream(_streams[sid])
		_:
			pass  # PRIORITY and unknown frame types are ignored (RFC 9113 5.5)


func _on_data(flags: int, sid: int, payload: PackedByteArray) -> void:
	if sid == 0:
		_connection_error(ERR_PROTOCOL, "DATA on stream 0")
		return
	# Flow control counts the whole payload, padding included, even on streams we dropped.
	_conn_unacked += payload.size()
	if _conn_unacked * 2 >= _conn_window:
		_window_update(0, _conn_unacked)
		_conn_unacked = 0
	var body: Variant = _unpad(flags, payload, 0)
	var s: _Stream = _streams.get(sid)
	if body == null or s == null:
		return
	var end := (flags & FLAG_END_STREAM) != 0
	stats["data_bytes_in"] += (body as PackedByteArray).size()
	if end:
		_end_remote(s)
	else:
		s.unacked += payload.size()
		if s.unacked * 2 >= _window_size:
			_window_update(sid, s.unacked)
			s.unacked = 0
	_notify(s, "_on_h2_data", body, end)


func _on_header_block() -> void:
	var sid := _header_stream
	_header_stream = 0
	# Decode even for streams we dropped: the dynamic table must stay in step.
	var headers: Variant = _decoder.decode(_header_block)
	if headers == null:
		_connection_error(ERR_COMPRESSION, "HPACK: " + _decoder.error)
		return
	var s: _Stream = _streams.get(sid)
	if s == null:
		return
	if _header_end_stream:
		_end_remote(s)
	_notify(s, "_on_h2_headers", headers, _header_end_stream)


func _end_remote(s: _Stream) -> void:
	# A gRPC response ends with the server's END_STREAM; our side is closed by then or
	# no longer matters (a server may finish before reading all of a client stream).
	_streams.erase(s.id)
	if not s.local_closed:
		_frame(FrameType.RST_STREAM, 0, s.id, _u32(ERR_NO_ERROR))
	_open_waiting()


func _on_settings(flags: int, sid: int, payload: PackedByteArray) -> void:
	if sid != 0 or payload.size() % 6 != 0:
		_connection_error(ERR_PROTOCOL, "malformed SETTINGS (stream %d, %d bytes)" % [sid, payload.size()])
		return
	if (flags & FLAG_ACK) != 0:
		return
	for i in range(0, payload.size(), 6):
		var id := (payload[i] << 8) | payload[i + 1]
		var value := _u32_at(payload, i + 2)
		match id:
			SETTINGS_INITIAL_WINDOW_SIZE:
				if value > 0x7fffffff:
					_connection_error(ERR_FLOW_CONTROL, "initial window %d too large" % value)
					return
				for s: _Stream in _streams.values():
					s.send_window += value - _peer_initial_window
				_peer_initial_window = value
			SETTINGS_MAX_FRAME_SIZE:
				_peer_max_frame = clampi(value, 16384, 16777215)
			SETTINGS_MAX_CONCURRENT_STREAMS:
				_peer_max_streams = value
	_frame(FrameType.SETTINGS, FLAG_ACK, 0, PackedByteArray())
	stats["settings_acked"] += 1
	_settings_received = true
	for s: _Stream in _streams.values():
		_flush_stream(s)
	_open_waiting()


func _on_goaway(payload: PackedByteArray) -> void:
	if payload.size() < 8:
		_connection_error(ERR_FRAME_SIZE, "GOAWAY of %d bytes" % payload.size())
		return
	var last_id := _u31_at(payload, 0)
	var code := _u32_at(payload, 4)
	var debug := payload.slice(8).get_string_from_utf8()
	_goaway = true
	var why := "server sent GOAWAY (HTTP/2 error %d%s)" % [code, ": " + debug if debug else ""]
	for sid: int in _streams.keys():
		if sid > last_id or code != ERR_NO_ERROR:
			var s: _Stream = _streams[sid]
			_streams.erase(sid)
			_notify(s, "_on_h2_closed", GRPC_UNAVAILABLE, why)
	for s: _Stream in _waiting:
		_notify(s, "_on_h2_closed", GRPC_UNAVAILABLE, why)
	_waiting.clear()
	if code != ERR_NO_ERROR:
		_fail(GRPC_UNAVAILABLE, why)


func _open_waiting() -> void:
	while not _waiting.is_empty() and _streams.size() < _peer_max_streams and state != State.CLOSED:
		var s: _Stream = _waiting.pop_front()
		s.id = _next_id
		_next_id += 2
		s.send_window = _peer_initial_window
		_streams[s.id] = s
		stats["streams_opened"] += 1
		var block := Hpack.encode(s.headers)
		var first := true
		while first or not block.is_empty():
			var part := block.slice(0, _peer_max_frame)
			block = block.slice(part.size())
			var flags := FLAG_END_HEADERS if block.is_empty() else 0
			_frame(FrameType.HEADERS if first else FrameType.CONTINUATION, flags, s.id, part)
			first = false
		_flush_stream(s)
	_flush()


func _flush_stream(s: _Stream) -> void:
	while not s.pending.is_empty() and state != State.CLOSED:
		var n := mini(s.pending.size(), mini(_peer_max_frame, mini(_send_window, s.send_window)))
		if n <= 0:
			return  # wait for WINDOW_UPDATE
		var last := n == s.pending.size() and s.end_pending
		_frame(FrameType.DATA, FLAG_END_STREAM if last else 0, s.id, s.pending.slice(0, n))
		s.pending = s.pending.slice(n)
		_send_window -= n
		s.send_window -= n
		s.local_closed = last
	if s.end_pending and not s.local_closed:
		_frame(FrameType.DATA, FLAG_END_STREAM, s.id, PackedByteArray())
		s.local_closed = true


func _notify(s: _Stream, method: StringName, a: Variant, b: Variant) -> void:
	var listener: Object = s.listener.get_ref()
	if listener != null:
		listener.call(method, a, b)
	elif _streams.has(s.id):
		reset_stream(s)  # nobody holds the call any more: stop the server's work


func _window_update(sid: int, increment: int) -> void:
	if increment > 0:
		_frame(FrameType.WINDOW_UPDATE, 0, sid, _u32(increment))
		stats["window_updates_sent"] += 1


func _connection_error(code: int, message: String) -> void:
	if state == State.CLOSED:
		return
	_frame(FrameType.GOAWAY, 0, 0, _u32(0) + _u32(code) + message.to_utf8_buffer())
	_flush()
	_fail(GRPC_INTERNAL if code != ERR_NO_ERROR else GRPC_UNAVAILABLE, message)


## Close the socket and fail every stream with `grpc_code`.
func _fail(grpc_code: int, message: String) -> void:
	if state == State.CLOSED:
		return
	state = State.CLOSED
	close_reason = message
	_tcp.disconnect_from_host()
	var victims: Array = _streams.values() + _waiting
	_streams.clear()
	_waiting.clear()
	for s: _Stream in victims:
		_notify(s, "_on_h2_closed", grpc_code, message)


func _flush() -> void:
	if _out.is_empty() or _tcp.get_status() != StreamPeerTCP.STATUS_CONNECTED:
		return
	var sent: Array = _tcp.put_partial_data(_out)
	if sent[0] != OK:
		_fail(GRPC_UNAVAILABLE, "write to %s:%d failed (%s)" % [host, port, error_string(sent[0])])
		return
	_out = _out.slice(sent[1])


func _frame(type: int, flags: int, sid: int, payload: PackedByteArray) -> void:
	var n := payload.size()
	_out.append_array(PackedByteArray([(n >> 16) & 0xff, (n >> 8) & 0xff, n & 0xff, type, flags]))
	_out.append_array(_u32(sid & 0x7fffffff))
	_out.append_array(payload)


## Strip padding (and `skip` leading bytes, e.g. HEADERS priority); null on malformed.
func _unpad(flags: int, payload: PackedByteArray, skip: int) -> Variant:
	var start := skip
	var end := payload.size()
	if (flags & FLAG_PADDED) != 0:
		if payload.is_empty():
			_connection_error(ERR_PROTOCOL, "padded frame without a pad length")
			return null
		start += 1
		end -= payload[0]
	if start > end:
		_connection_error(ERR_PROTOCOL, "padding exceeds the frame payload")
		return null
	return payload.slice(start, end)


static func _u16(v: int) -> PackedByteArray:
	return PackedByteArray([(v >> 8) & 0xff, v & 0xff])


static func _u32(v: int) -> PackedByteArray:
	return PackedByteArray([(v >> 24) & 0xff, (v >> 16) & 0xff, (v >> 8) & 0xff, v & 0xff])


static func _u32_at(b: PackedByteArray, i: int) -> int:
	return (b[i] << 24) | (b[i + 1] << 16) | (b[i + 2] << 8) | b[i + 3]


static func _u31_at(b: PackedByteArray, i: int) -> int:
	return _u32_at(b, i) & 0x7fffffff
