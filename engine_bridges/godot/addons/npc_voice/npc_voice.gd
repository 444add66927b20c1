## NpcVoice: speaks lines through the npc-voice daemon and plays them as they stream in.
##
## Add it under a character, point `player_path` at an AudioStreamPlayer / 2D / 3D (or leave
## it empty for a plain AudioStreamPlayer child), set `address` and `character`, call
## speak("..."). PCM goes into an AudioStreamGenerator; marks (visemes for lip-sync, words
## for subtitles, phonemes) are emitted when the audio clock reaches them:
##   played samples = frames pushed into the generator - frames still buffered in it.
## Underruns play silence. cancel() fades out and stops the daemon's work on the line.
## All network work happens in _process(); nothing blocks the main loop.
class_name NpcVoice
extends Node

## The first sample of a line started playing.
signal speech_started
## The last sample of a line (or its fade after cancel) played.
signal speech_finished
signal viseme(label: String)
signal word(label: String)
signal phoneme(label: String)
## A call failed: gRPC status code (5 NOT_FOUND: unknown character, 14 UNAVAILABLE: no
## daemon, ...) and the daemon's message. A line that fails before any audio emits only this.
signal error(code: int, message: String)

const Client = preload("client.gd")
const GrpcCall = preload("grpc_call.gd")
const Proto = preload("proto.gd")
const RATES: Array[int] = [16000, 22050, 24000, 44100, 48000]

## Daemon address, host:port.
@export var address := "127.0.0.1:50051"
## Character id from the daemon's voices.yaml ("guard"), or an instance ("guard/42") that
## keeps its own voice state. Empty = the daemon's default character.
@export var character := ""
## AudioStreamPlayer, AudioStreamPlayer2D or AudioStreamPlayer3D to play through. Empty:
## an AudioStreamPlayer child is created.
@export var player_path: NodePath
## Sample rate to ask for; 0 = the project's mix rate when the daemon offers it.
@export var sample_rate := 0
## How far ahead of the playhead audio is handed to the generator. Smaller: a quicker
## cancel fade; larger: fewer underruns when a frame takes long.
@export_range(0.03, 1.0) var lead_seconds := 0.15
## Fade length for cancel() and interruptions.
@export_range(0.0, 500.0) var fade_ms := 40.0
## Sent as `authorization: Bearer <token>` when the daemon requires it.
@export var auth_token := ""

## For lip-sync code and tests: the line-relative start sample of the mark being emitted.
var last_mark_start := 0

var _client: Client
var _client_key := ""
var _player: Node
var _playback: AudioStreamGeneratorPlayback
var _rate := 22050
var _capacity := 0  # generator frames when empty
var _pushed := 0  # frames handed to the generator since it started
var _pending := PackedVector2Array()  # received, not yet in the generator
var _call: GrpcCall
var _encoding := Proto.Encoding.PCM_F32LE  # of the stream playing; f32 is asked for (native conversion)
var _request_id := ""
var _serial := 0  # of the call in flight: responses of older calls are ignored
var _line_character := ""  # of the Speak call in flight, for the Cancel RPC
var _queue: Array = []  # [text, character] of lines waiting for the call in flight
## Lines in play order: {"base": first frame, "end": frame after the last (-1 = open),
## "audio": any audio yet, "started": speech_started emitted}.
var _lines: Array[Dictionary] = []
## Pending marks sorted by frame: [frame, kind, label, line base].
var _marks: Array = []

static var _clients := {}  # address + token -> Client, shared by every NpcVoice node


func _ready() -> void:
	_player = get_node_or_null(player_path) if not player_path.is_empty() else null
	if _player == null:
		_player = AudioStreamPlayer.new()
		add_child(_player)
	var mix := int(AudioServer.get_mix_rate())
	if sample_rate == 0:
		sample_rate = mix if RATES.has(mix) else 0
	_start_generator(sample_rate if sample_rate > 0 else 22050)


## Speak a line. Anything still playing is faded out first. With interrupt = false the
## line waits until the one in flight has streamed (its audio keeps playing meanwhile) and
## null is returned; otherwise the call, whose `finished` signal gives its status.
func speak(text: String, character_id: String = "", interrupt: bool = true) -> GrpcCall:
	var who := character_id if character_id else character
	if interrupt:
		cancel()
	elif _call != null:
		_queue.append([text, who])
		return null
	_line_character = who
	var request := {"character": who, "text": text,
		"format": {"encoding": Proto.Encoding.PCM_F32LE, "sample_rate_hz": sample_rate}}
	return _begin(client().speak(request))


## Open a Converse stream (text in pieces, e.g. from an LLM); feed it with converse_text()
## and end it with converse_end(). Audio plays as phrases complete.
func converse_begin(character_id: String = "") -> GrpcCall:
	cancel()
	var who := character_id if character_id else character
	var grpc_call := _begin(client().converse(who))
	client().converse_send(grpc_call, {"config": {"character": who,
		"format": {"encoding": Proto.Encoding.PCM_F32LE, "sample_rate_hz": sample_rate}}})
	return grpc_call


func converse_text(text: String, flush: bool = false) -> void:
	if _call != null and not _call.is_done():
		client().converse_send(_call, {"text": text})
		if flush:
			client().converse_send(_call, {"flush": true})


## Speak what is buffered and close the Converse stream.
func converse_end() -> void:
	if _call != null and not _call.is_done():
		client().converse_send(_call, {"close": true}, true)


## The client this node talks through (shared by every NpcVoice with the same address).
func client() -> Client:
	if _client == null or _client_key != address + "\n" + auth_token:
		_client_key = address + "\n" + auth_token
		_client = _shared_client(address, auth_token)
	return _client


## Stop speaking: fade out what is queued, stop the daemon's work, drop later marks and
## lines waiting their turn.
func cancel() -> void:
	_queue.clear()
	var grpc_call := _call
	_call = null  # first: its CANCELLED status is ours, not an error to report
	if grpc_call != null and not grpc_call.is_done():
		if grpc_call.method.ends_with("/Speak") and not _request_id.is_empty():
			client().cancel(_line_character, _request_id)  # the daemon frees the slot at once
		grpc_call.cancel()
	var fade := mini(_pending.size(), int(fade_ms * _rate / 1000.0))
	for i in fade:
		_pending[i] = _pending[i] * (1.0 - float(i + 1) / fade)
	_pending.resize(fade)
	var cut := _pushed + _pending.size()
	for line: Dictionary in _lines:
		line["end"] = mini(line["end"], cut) if line["end"] >= 0 else cut
	while not _marks.is_empty() and _marks[-1][0] >= cut:
		_marks.pop_back()


func is_speaking() -> bool:
	return not _lines.is_empty()


## Samples of the current line played so far (the audio clock), 0 when idle.
func playback_position_samples() -> int:
	return _played() - int(_lines[0]["base"]) if not _lines.is_empty() else 0


func _process(_delta: float) -> void:
	client().poll()
	_feed_generator()
	var played := _played()
	# Per line, in order: speech_started, its marks up to the playhead, speech_finished.
	while not _lines.is_empty():
		var line: Dictionary = _lines[0]
		var end: int = line["end"]
		if not line["started"]:
			if end >= 0 and (not line["audio"] or end <= int(line["base"])):
				_lines.pop_front()  # ended (or was cut) before any of it could play: no signals
				_marks = _marks.filter(func(m: Array) -> bool: return m[3] != line["base"])
				continue
			if not line["audio"] or played <= int(line["base"]):
				break  # its first sample has not been played yet
			line["started"] = true
			speech_started.emit()
		_emit_marks(mini(played, end) if end >= 0 else played)
		if end < 0 or played < end:
			break
		_lines.pop_front()
		if line["started"]:
			speech_finished.emit()


## Emit the marks whose first sample has been played (frame index < played).
func _emit_marks(played: int) -> void:
	while not _marks.is_empty() and _marks[0][0] < played:
		var mark: Array = _marks.pop_front()
		last_mark_start = mark[0] - mark[3]
		match mark[1]:
			"visemes":
				viseme.emit(mark[2])
			"words":
				word.emit(mark[2])
			"phonemes":
				phoneme.emit(mark[2])


func _exit_tree() -> void:
	cancel()


func _begin(grpc_call: GrpcCall) -> GrpcCall:
	_call = grpc_call
	_request_id = ""
	_serial += 1
	# Bind a serial, not the call: a call bound into its own signal would never be freed.
	grpc_call.message_received.connect(_on_message.bind(_serial))
	grpc_call.finished.connect(_on_finished.bind(_serial))
	return grpc_call


func _on_message(msg: Dictionary, serial: int) -> void:
	if serial != _serial or _call == null:
		return  # a cancelled call's last words
	var queued := _pushed + _pending.size()
	if msg.has("start"):
		var fmt: Dictionary = msg["start"].get("format", {})
		_encoding = fmt.get("encoding", Proto.Encoding.PCM_S16LE)
		_request_id = msg["start"].get("request_id", "")
		var rate: int = fmt.get("sample_rate_hz", 22050)
		if rate != _rate:
			_start_generator(rate)  # drops a fade tail at a different rate; rare
			queued = 0
		_lines.append({"base": queued, "end": -1, "audio": false, "started": false})
	elif _lines.is_empty() or _lines[-1]["end"] >= 0:
		return  # no open line (a misbehaving daemon): nothing to attach this to
	elif msg.has("marks"):
		var base: int = _lines[-1]["base"]
		for kind: String in ["visemes", "words", "phonemes"]:
			for m: Dictionary in msg["marks"].get(kind, []):
				var entry := [base + int(m.get("start_sample", 0)), kind, m.get("label", ""), base]
				_marks.insert(_marks.bsearch_custom(entry, func(a: Array, b: Array) -> bool: return a[0] < b[0], false), entry)
	elif msg.has("audio"):
		var line: Dictionary = _lines[-1]
		var gap := int(line["base"]) + int(msg["audio"].get("sample_offset", 0)) - queued
		if gap > 0:
			_pending.resize(_pending.size() + gap)  # a hole in the stream plays as silence
		_pending.append_array(_to_frames(msg["audio"].get("pcm", PackedByteArray())))
		line["audio"] = true
	elif msg.has("end"):
		_lines[-1]["end"] = int(_lines[-1]["base"]) + int(msg["end"].get("total_samples", 0))


func _on_finished(code: int, message: String, serial: int) -> void:
	if serial != _serial or _call == null:
		return
	_call = null
	if code != GrpcCall.Code.OK:
		error.emit(code, message)
	var queued := _pushed + _pending.size()
	for line: Dictionary in _lines:
		if line["end"] < 0:
			line["end"] = queued
	_lines = _lines.filter(func(l: Dictionary) -> bool: return l["audio"] or l["started"])
	if not _queue.is_empty():
		var next: Array = _queue.pop_front()
		speak(next[0], next[1], false)


func _to_frames(pcm: PackedByteArray) -> PackedVector2Array:
	var frames := PackedVector2Array()
	if _encoding == Proto.Encoding.PCM_F32LE:
		var samples := pcm.to_float32_array()
		frames.resize(samples.size())
		for i in samples.size():
			frames[i] = Vector2(samples[i], samples[i])
	else:
		var n := pcm.size() >> 1
		frames.resize(n)
		for i in n:
			var v := pcm.decode_s16(2 * i) / 32768.0
			frames[i] = Vector2(v, v)
	return frames


func _start_generator(rate: int) -> void:
	var generator := AudioStreamGenerator.new()
	generator.mix_rate = rate
	generator.buffer_length = maxf(lead_seconds * 2.0, 0.1)
	_player.stream = generator
	_player.play()
	_playback = _player.get_stream_playback()
	_capacity = _playback.get_frames_available()
	_rate = rate
	_pushed = 0
	_pending.clear()
	_lines.clear()
	_marks.clear()


func _feed_generator() -> void:
	if _playback == null or _pending.is_empty():
		return
	var buffered := _capacity - _playback.get_frames_available()
	var room := mini(_playback.get_frames_available(), int(lead_seconds * _rate) - buffered)
	var n := mini(room, _pending.size())
	if n <= 0:
		return
	_playback.push_buffer(_pending.slice(0, n))
	_pending = _pending.slice(n)
	_pushed += n


func _played() -> int:
	if _playback == null:
		return 0
	return _pushed - (_capacity - _playback.get_frames_available())


## Close the connections every NpcVoice shares (e.g. before quitting); they reopen on demand.
static func close_shared_clients() -> void:
	for c: Client in _clients.values():
		c.close()
	_clients.clear()


static func _shared_client(addr: String, token: String) -> Client:
	var key := addr + "\n" + token
	if not _clients.has(key):
		var c := Client.new(addr)
		if not token.is_empty():
			c.metadata["authorization"] = "Bearer " + token
		_clients[key] = c
	return _clients[key]
