## Client for the npc_voice.v1.NpcVoice gRPC service over one shared HTTP/2 connection.
##
## Call poll() often (every frame): it drives the connection and enforces deadlines. Calls
## return a grpc_call.gd object; connect to its message_received / finished signals. When
## the connection is lost or the server sends GOAWAY, the calls on it finish with
## UNAVAILABLE and the next call opens a new connection (reconnect on demand).
##
## Every call about one character carries the header x-npc-character (CHARACTER_HEADER), so a
## proxy in front of several daemons routes all of a character's calls to the daemon holding
## its voice state. A Converse call speaks as one character: converse(character).
extends RefCounted

const H2Connection = preload("h2_connection.gd")
const GrpcCall = preload("grpc_call.gd")
const Proto = preload("proto.gd")

const SERVICE := "/npc_voice.v1.NpcVoice/"
const USER_AGENT := "npc-voice-godot/0.1"
## Request metadata naming the call's character, for character-affine proxies.
const CHARACTER_HEADER := "x-npc-character"

var host := "127.0.0.1"
var port := 50051
## Extra request metadata, e.g. {"authorization": "Bearer <token>"} (names lowercase).
var metadata := {}
var connect_timeout_ms := 5000
## Deadline for Speak/Converse (0 = none) and for unary calls such as Cancel.
var stream_deadline_ms := 0
var unary_deadline_ms := 10000
## Flow-control window advertised per stream and for the connection.
var window_size := 4 << 20
## With calls open and nothing heard for keepalive_ms, PING; no answer within
## ping_timeout_ms ends the calls with UNAVAILABLE.
var keepalive_ms := 20000
var ping_timeout_ms := 10000

var _conn: H2Connection
var _draining: Array = []  # older connections still finishing their calls
var _calls: Array = []  # unfinished calls, for deadlines


## address: "host:port" (IPv6 as "[::1]:port").
func _init(address: String = "127.0.0.1:50051") -> void:
	var err := set_address(address)
	if not err.is_empty():
		push_error("npc_voice: " + err)


## Returns "" or why the address is rejected (the old address is then kept).
func set_address(address: String) -> String:
	var sep := address.rfind(":")
	var h := address.substr(0, sep).trim_prefix("[").trim_suffix("]") if sep > 0 else ""
	var p := address.substr(sep + 1) if sep > 0 else ""
	if h.is_empty() or not p.is_valid_int() or p.to_int() < 1 or p.to_int() > 65535:
		return "bad address %s: want host:port, e.g. 127.0.0.1:50051" % address.c_escape()
	if h != host or p.to_int() != port:
		host = h
		port = p.to_int()
		close()
	return ""


## Speak one line. request: a SpeakRequest Dictionary (see proto.gd), e.g.
## {"character": "guard", "text": "Halt!", "format": {"encoding": Proto.Encoding.PCM_F32LE},
## "busy_policy": Proto.BusyPolicy.INTERRUPT}. Responses are SpeakResponse Dictionaries.
func speak(request: Dictionary) -> GrpcCall:
	var who: Variant = request.get("character", "")
	var grpc_call := start_call("Speak", Proto.SPEAK_RESPONSE, stream_deadline_ms, who if who is String else "")
	_send_encoded(grpc_call, request, Proto.SPEAK_REQUEST, true)
	return grpc_call


## Open a Converse stream; send ConverseRequest Dictionaries with converse_send().
## character: the one character its contexts speak as (routes the call through a proxy).
func converse(character: String = "") -> GrpcCall:
	return start_call("Converse", Proto.SPEAK_RESPONSE, stream_deadline_ms, character)


func converse_send(grpc_call: GrpcCall, request: Dictionary, last: bool = false) -> void:
	_send_encoded(grpc_call, request, Proto.CONVERSE_REQUEST, last)


## Ask the daemon to stop a character's speech (request_id "" = whatever it is saying).
## The response is a CancelResponse Dictionary {"cancelled": bool, "samples_produced": int}.
func cancel(character: String, request_id: String = "") -> GrpcCall:
	var grpc_call := start_call("Cancel", Proto.CANCEL_RESPONSE, unary_deadline_ms, character)
	_send_encoded(grpc_call, {"character": character, "request_id": request_id}, Proto.CANCEL_REQUEST, true)
	return grpc_call


## Start any method of the service; messages are sent with call.send(bytes). character: the
## x-npc-character header ("" = none).
func start_call(method: String, response_schema: Dictionary, deadline_ms: int, character: String = "") -> GrpcCall:
	var grpc_call := GrpcCall.new(SERVICE + method, response_schema, deadline_ms)
	var headers: Array = [
		[":method", "POST"], [":scheme", "http"], [":path", grpc_call.method],
		[":authority", "%s:%d" % [("[%s]" % host) if host.contains(":") else host, port]],
		["content-type", "application/grpc"], ["te", "trailers"], ["user-agent", USER_AGENT],
	]
	if deadline_ms > 0:
		headers.append(["grpc-timeout", "%dm" % mini(deadline_ms, 99999999)])
	for name: String in metadata:
		headers.append([name.to_lower(), str(metadata[name])])
	if routable(character):
		headers.append([CHARACTER_HEADER, character])
	grpc_call.start(_connection(), headers)
	_calls.append(grpc_call)
	return grpc_call


## Whether the header can carry this id: not "" (the default character is not routed: name it
## behind a proxy) and printable ASCII (the daemon rejects other ids anyway).
static func routable(character: String) -> bool:
	if character.is_empty():
		return false
	for i in character.length():
		var c := character.unicode_at(i)
		if c <= 0x20 or c > 0x7e:
			return false
	return true


## The connection in use (opened on demand).
func connection() -> H2Connection:
	return _connection()


## Drive the connections and deadlines. Cheap when idle.
func poll() -> void:
	if _conn != null:
		_conn.poll()
	for c: H2Connection in _draining.duplicate():
		c.poll()
		if c.state == H2Connection.State.CLOSED or c.active_streams() == 0:
			c.close("drained")
			_draining.erase(c)
	var now := Time.get_ticks_msec()
	for grpc_call: GrpcCall in _calls.duplicate():
		grpc_call.check_deadline(now)
		if grpc_call.is_done():
			_calls.erase(grpc_call)


## Close every connection; unfinished calls end with UNAVAILABLE.
func close() -> void:
	for c: H2Connection in _draining:
		c.close()
	_draining.clear()
	if _conn != null:
		_conn.close()
		_conn = null


func _connection() -> H2Connection:
	if _conn != null and not _conn.is_usable():
		if _conn.state != H2Connection.State.CLOSED:
			_draining.append(_conn)
		_conn = null
	if _conn == null:
		_conn = H2Connection.new(host, port, window_size, connect_timeout_ms)
		_conn.keepalive_ms = keepalive_ms
		_conn.ping_timeout_ms = ping_timeout_ms
	return _conn


func _send_encoded(grpc_call: GrpcCall, message: Dictionary, schema: Dictionary, last: bool) -> void:
	var raw: Variant = Proto.encode(message, schema)
	if raw == null:
		grpc_call.abort(GrpcCall.Code.INVALID_ARGUMENT, "bad request (%s): %s" % [Proto.last_error(), str(message)])
		return
	grpc_call.send(raw, last)
