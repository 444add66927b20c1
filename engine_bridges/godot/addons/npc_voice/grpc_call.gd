## One gRPC call on an HTTP/2 stream: length-prefixed messages out and in, status from the
## trailers (or a Trailers-Only response), deadline, cancellation. Every call ends exactly
## once with `finished(code, message)`, whatever happens to the stream or the connection.
extends RefCounted

## A response message: a decoded Dictionary when the call has a schema, else PackedByteArray.
signal message_received(message: Variant)
## The call is over. code is a gRPC status code (0 = OK); message explains any other code.
signal finished(code: int, message: String)

enum Code {
	OK = 0, CANCELLED = 1, UNKNOWN = 2, INVALID_ARGUMENT = 3, DEADLINE_EXCEEDED = 4, NOT_FOUND = 5,
	ALREADY_EXISTS = 6, PERMISSION_DENIED = 7, RESOURCE_EXHAUSTED = 8, FAILED_PRECONDITION = 9,
	ABORTED = 10, OUT_OF_RANGE = 11, UNIMPLEMENTED = 12, INTERNAL = 13, UNAVAILABLE = 14,
	DATA_LOSS = 15, UNAUTHENTICATED = 16,
}

const Proto = preload("proto.gd")

## "/package.Service/Method"
var method: String
## Status once finished (-1 before), and its message.
var code := -1
var status_message := ""
## Response headers and trailers, lowercase name -> value.
var response_headers := {}
var trailers := {}
## Every decoded message, in order, when keep_messages is set (handy for tests).
var keep_messages := false
var messages: Array = []

var _conn: RefCounted  # h2_connection.gd
var _stream: RefCounted  # h2_connection.gd _Stream
var _schema: Dictionary  # response schema; empty = raw bytes
var _deadline_ms := 0  # Time.get_ticks_msec() after which the call fails, 0 = none
var _buf := PackedByteArray()
var _got_headers := false


func _init(method_path: String, response_schema: Dictionary, deadline_ms: int) -> void:
	method = method_path
	_schema = response_schema
	if deadline_ms > 0:
		_deadline_ms = Time.get_ticks_msec() + deadline_ms


func is_done() -> bool:
	return code >= 0


## Start the call on `conn` with these request headers (client.gd builds them).
func start(conn: RefCounted, headers: Array) -> void:
	_conn = conn
	_stream = conn.open_stream(self, headers)


## Send one request message (bytes, already protobuf-encoded). end_stream closes our side.
func send(message: PackedByteArray, end_stream: bool = false) -> void:
	if is_done():
		return
	var framed := PackedByteArray([0, 0, 0, 0, 0])
	var n := message.size()
	framed[1] = (n >> 24) & 0xff
	framed[2] = (n >> 16) & 0xff
	framed[3] = (n >> 8) & 0xff
	framed[4] = n & 0xff
	framed.append_array(message)
	_conn.send_data(_stream, framed, end_stream)


## Half-close: no more request messages.
func close_send() -> void:
	if not is_done():
		_conn.send_data(_stream, PackedByteArray(), true)


## Cancel from the client side: RST_STREAM(CANCEL) and finished(CANCELLED).
func cancel(message: String = "cancelled by the client") -> void:
	if is_done():
		return
	_conn.reset_stream(_stream)
	_finish(Code.CANCELLED, message)


## End the call at once with `status` (e.g. a request that could not be encoded). The
## signal is deferred so that a caller connecting right after starting the call hears it.
func abort(status: int, message: String) -> void:
	if is_done():
		return
	_conn.reset_stream(_stream)
	code = status
	status_message = message
	finished.emit.call_deferred(status, message)


## Called by the client's poll(): enforce the deadline.
func check_deadline(now_ms: int) -> void:
	if _deadline_ms > 0 and now_ms > _deadline_ms and not is_done():
		_conn.reset_stream(_stream)
		_finish(Code.DEADLINE_EXCEEDED, "deadline exceeded on %s" % method)


func _on_h2_headers(headers: Array, end_stream: bool) -> void:
	if is_done():
		return
	var map := {}
	for h: Array in headers:
		map[h[0]] = h[1]
	if not _got_headers:
		_got_headers = true
		response_headers = map
		var http_status: String = map.get(":status", "")
		if http_status != "200" and not map.has("grpc-status"):
			_conn.reset_stream(_stream)
			_finish(_code_for_http(http_status), "HTTP status %s from %s" % [http_status, method])
			return
		if not end_stream:
			return
		# Trailers-Only: the status arrives in the one and only HEADERS frame.
	elif not end_stream:
		_conn.reset_stream(_stream)
		_finish(Code.INTERNAL, "a second HEADERS frame without END_STREAM on %s" % method)
		return
	trailers = map
	_finish_from_trailers()


func _on_h2_data(data: PackedByteArray, end_stream: bool) -> void:
	if is_done():
		return
	_buf.append_array(data)
	while _buf.size() >= 5 and not is_done():
		var n := (_buf[1] << 24) | (_buf[2] << 16) | (_buf[3] << 8) | _buf[4]
		if _buf.size() < 5 + n:
			break
		if _buf[0] != 0:
			_conn.reset_stream(_stream)
			_finish(Code.INTERNAL, "compressed message on %s, but no compression was negotiated" % method)
			return
		var raw := _buf.slice(5, 5 + n)
		_buf = _buf.slice(5 + n)
		var message: Variant = raw
		if not _schema.is_empty():
			message = Proto.decode(raw, _schema)
			if message == null:
				_conn.reset_stream(_stream)
				_finish(Code.INTERNAL, "malformed response on %s: %s" % [method, Proto.last_error()])
				return
		if keep_messages:
			messages.append(message)
		message_received.emit(message)
	if end_stream and not is_done():
		_finish(Code.INTERNAL, "%s ended without trailers (no grpc-status)" % method)


func _on_h2_closed(grpc_code: int, message: String) -> void:
	if not is_done():
		_finish(grpc_code, message)


func _finish_from_trailers() -> void:
	if not _buf.is_empty():
		_finish(Code.INTERNAL, "%s ended inside a message (%d bytes left)" % [method, _buf.size()])
		return
	var status: String = trailers.get("grpc-status", "")
	if not status.is_valid_int():
		_finish(Code.UNKNOWN, "missing or bad grpc-status %s on %s" % [status.c_escape(), method])
		return
	_finish(status.to_int(), _percent_decode(trailers.get("grpc-message", "")))


func _finish(status: int, message: String) -> void:
	if is_done():
		return
	code = status
	status_message = message
	finished.emit(status, message)


## grpc-message is percent-encoded UTF-8 (gRPC over HTTP/2, "Responses").
static func _percent_decode(text: String) -> String:
	var raw := text.to_utf8_buffer()
	var out := PackedByteArray()
	var i := 0
	while i < raw.size():
		var hex := raw.slice(i + 1, i + 3).get_string_from_ascii() if raw[i] == 0x25 else ""
		if hex.length() == 2 and ("0x" + hex).is_valid_hex_number(true):
			out.append(hex.hex_to_int())
			i += 3
		else:
			out.append(raw[i])
			i += 1
	return out.get_string_from_utf8()


## HTTP status -> gRPC code when a proxy or a non-gRPC server answers (gRPC's http-grpc-status-mapping).
static func _code_for_http(http_status: String) -> int:
	match http_status:
		"400":
			return Code.INTERNAL
		"401":
			return Code.UNAUTHENTICATED
		"403":
			return Code.PERMISSION_DENIED
		"404":
			return Code.UNIMPLEMENTED
		"429", "502", "503", "504":
			return Code.UNAVAILABLE
	return Code.UNKNOWN
