## Shared by the live suites (live_tests.gd: the client; node_live_tests.gd: the NpcVoice
## node), which run against a daemon at NPC_VOICE_ADDR = host:port. Each test returns "ok"
## or why it failed. They wait by polling every frame, bounded by generous time limits that
## only turn a hang into a failure (no timing asserts).
extends RefCounted

const Client = preload("res://addons/npc_voice/client.gd")
const GrpcCall = preload("res://addons/npc_voice/grpc_call.gd")
const Proto = preload("res://addons/npc_voice/proto.gd")
const NpcVoiceNode = preload("res://addons/npc_voice/npc_voice.gd")

const LINE := "Halt! Who goes there? State your name and your business in the city."
const LONG_LINE := ("The northern road is closed until the bridge is rebuilt, so travellers must take "
	+ "the old forest path, which is longer and darker, and the wolves have been bold this winter. "
	+ "Keep to the path, keep your torch lit, and do not stop at the ruined chapel after sundown.")
const WAIT_MS := 120000  # a cold daemon on two busy cores can be slow; only a hang exceeds this

var _tree: SceneTree
var _addr: String
var _client: Client


func _init(tree: SceneTree, addr: String) -> void:
	_tree = tree
	_addr = addr
	if not addr.is_empty():
		_client = Client.new(addr)


## The test_ methods of the concrete suite, in source order.
func test_names() -> Array:
	var names: Array = []
	for m in get_script().get_script_method_list():
		var n: String = m["name"]
		if n.begins_with("test_") and n != "test_names" and not names.has(n):
			names.append(n)
	return names


func shutdown() -> void:
	if _client != null:
		_client.close()


## Poll `clients` every frame until cond() holds; false after `timeout_ms`.
func _until(cond: Callable, clients: Array = [], timeout_ms: int = WAIT_MS) -> bool:
	var deadline := Time.get_ticks_msec() + timeout_ms
	while not cond.call():
		if Time.get_ticks_msec() > deadline:
			return false
		_client.poll()
		for c: Client in clients:
			c.poll()
		await _tree.process_frame
	return true


func _speak(client: Client, character: String, text: String, encoding: int) -> GrpcCall:
	var rpc := client.speak({"character": character, "text": text,
		"format": {"encoding": encoding, "sample_rate_hz": 22050}})
	rpc.keep_messages = true
	return rpc


## Check one finished Speak: start first, end last, marks before their audio, contiguous
## audio whose sample count equals StreamEnd.total_samples. Returns "" or the problem.
static func _check_stream(rpc: GrpcCall, want_reason: int) -> String:
	if rpc.code != GrpcCall.Code.OK:
		return "status %d: %s" % [rpc.code, rpc.status_message]
	var msgs := rpc.messages
	if msgs.size() < 3 or not msgs[0].has("start") or not msgs[-1].has("end"):
		return "want start ... end, got %d messages starting %s" % [msgs.size(), str(msgs.slice(0, 1))]
	var fmt: Dictionary = msgs[0]["start"].get("format", {})
	var width := 4 if fmt.get("encoding", 0) == Proto.Encoding.PCM_F32LE else 2
	if fmt.get("sample_rate_hz", 0) <= 0 or fmt.get("encoding", 0) == 0:
		return "StreamStart format is unspecified: %s" % str(fmt)
	var samples := 0
	var marks := 0
	for m: Dictionary in msgs.slice(1, -1):
		if m.has("audio"):
			var pcm: PackedByteArray = m["audio"].get("pcm", PackedByteArray())
			if m["audio"].get("sample_offset", 0) != samples:
				return "audio chunk at sample %d, expected %d" % [m["audio"].get("sample_offset", 0), samples]
			if pcm.size() % width != 0:
				return "chunk of %d bytes is not whole %d-byte samples" % [pcm.size(), width]
			@warning_ignore("integer_division")
			samples += pcm.size() / width
		elif m.has("marks"):
			for kind: String in ["phonemes", "visemes", "words"]:
				for mark: Dictionary in m["marks"].get(kind, []):
					marks += 1
					# "Marks are sent before the audio they describe" (a cancel may cut that short).
					if mark.get("start_sample", 0) < samples and want_reason == Proto.EndReason.COMPLETED:
						return "%s mark %s at %d arrived after its audio (%d samples sent)" % [
							kind, mark.get("label"), mark.get("start_sample", 0), samples]
		else:
			return "unexpected message in the middle: %s" % str(m)
	var end: Dictionary = msgs[-1]["end"]
	if end.get("reason", 0) != want_reason:
		return "end reason %d, want %d" % [end.get("reason", 0), want_reason]
	if end.get("total_samples", -1) != samples:
		return "StreamEnd.total_samples %d but %d samples arrived" % [end.get("total_samples", -1), samples]
	if want_reason == Proto.EndReason.COMPLETED and (samples == 0 or marks == 0):
		return "a completed line with %d samples and %d marks" % [samples, marks]
	return ""
