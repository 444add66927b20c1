## Tests against a running daemon (NPC_VOICE_ADDR = host:port). Each returns "ok" or why it
## failed. They wait on the audio-free client by polling it every frame, bounded by
## generous time limits that only turn a hang into a failure (no timing asserts).
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


func test_names() -> Array:
	var names: Array = []
	for m in get_method_list():
		var n: String = m["name"]
		if n.begins_with("test_") and n != "test_names":
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


func test_speak_line() -> String:
	var rpc := _speak(_client, "guard", LINE, Proto.Encoding.PCM_F32LE)
	if not await _until(rpc.is_done):
		return "no end after %d ms" % WAIT_MS
	var problem := _check_stream(rpc, Proto.EndReason.COMPLETED)
	if not problem.is_empty():
		return problem
	print("  speak: %d messages, %d samples" % [rpc.messages.size(), rpc.messages[-1]["end"]["total_samples"]])
	var gone: WeakRef = weakref(rpc)
	rpc = null
	_client.poll()
	if gone.get_ref() != null:
		return "the finished rpc is still referenced (a RefCounted cycle leaks every line)"
	return "ok"


func test_two_lines_concurrently_on_one_connection() -> String:
	var conn := _client.connection()
	var opened: int = conn.stats["streams_opened"]
	var a := _speak(_client, "guard", LINE, Proto.Encoding.PCM_S16LE)
	var b := _speak(_client, "merchant", "Fresh apples, two coins a basket! Best in the market.", Proto.Encoding.PCM_F32LE)
	if not await _until(func() -> bool: return a.is_done() and b.is_done()):
		return "no end after %d ms (a done %s, b done %s)" % [WAIT_MS, a.is_done(), b.is_done()]
	for pair: Array in [["guard", a], ["merchant", b]]:
		var problem := _check_stream(pair[1], Proto.EndReason.COMPLETED)
		if not problem.is_empty():
			return "%s: %s" % [pair[0], problem]
	if _client.connection() != conn or conn.stats["streams_opened"] != opened + 2:
		return "the two calls did not share one connection"
	return "ok"


## Cancel RPC mid-line: the Speak stream ends with END_REASON_CANCELLED (status OK), and a
## client-side cancel (RST_STREAM) leaves the connection usable for the next line.
func test_cancel_mid_line() -> String:
	var rpc := _speak(_client, "guard/cancel-test", LONG_LINE, Proto.Encoding.PCM_S16LE)
	var has_audio := func() -> bool: return rpc.is_done() or rpc.messages.any(func(m: Dictionary) -> bool: return m.has("audio"))
	if not await _until(has_audio) or rpc.is_done():
		return "no audio before the end (status %d %s)" % [rpc.code, rpc.status_message]
	var request_id: String = rpc.messages[0]["start"].get("request_id", "")
	var cancel := _client.cancel("guard/cancel-test", request_id)
	cancel.keep_messages = true
	if not await _until(func() -> bool: return rpc.is_done() and cancel.is_done()):
		return "cancelled line did not end after %d ms" % WAIT_MS
	if cancel.code != GrpcCall.Code.OK or cancel.messages.is_empty() or not cancel.messages[0].get("cancelled", false):
		return "Cancel answered status %d %s %s" % [cancel.code, cancel.status_message, str(cancel.messages)]
	var problem := _check_stream(rpc, Proto.EndReason.CANCELLED)
	if not problem.is_empty():
		return "after Cancel: " + problem

	var local := _speak(_client, "guard", LONG_LINE, Proto.Encoding.PCM_S16LE)
	var local_audio := func() -> bool: return local.is_done() or local.messages.size() >= 3
	if not await _until(local_audio):
		return "second line produced nothing"
	local.cancel()
	if local.code != GrpcCall.Code.CANCELLED:
		return "client-side cancel gave status %d" % local.code
	var after := _speak(_client, "guard", "Move along.", Proto.Encoding.PCM_S16LE)
	if not await _until(after.is_done):
		return "line after a client-side cancel did not end"
	problem = _check_stream(after, Proto.EndReason.COMPLETED)
	return "ok" if problem.is_empty() else "line after a client-side cancel: " + problem


func test_unknown_character_is_not_found() -> String:
	var rpc := _speak(_client, "no-such-character-xyz", "Hello.", Proto.Encoding.PCM_S16LE)
	if not await _until(rpc.is_done, [], 30000):
		return "no status after 30 s: the error hangs"
	if rpc.code != GrpcCall.Code.NOT_FOUND:
		return "status %d (%s), want NOT_FOUND (5)" % [rpc.code, rpc.status_message]
	if rpc.status_message.is_empty():
		return "NOT_FOUND without a message"
	print("  not found: %s" % rpc.status_message)
	return "ok"


## More than 64 KiB of PCM through a 16 KiB stream window: only WINDOW_UPDATEs let it through.
func test_long_line_through_flow_control() -> String:
	var small := Client.new(_addr)
	small.window_size = 16384
	var rpc := _speak(small, "narrator", LONG_LINE, Proto.Encoding.PCM_F32LE)
	if not await _until(rpc.is_done, [small]):
		small.close()
		return "no end after %d ms (%d messages so far)" % [WAIT_MS, rpc.messages.size()]
	var stats: Dictionary = small.connection().stats
	small.close()
	var problem := _check_stream(rpc, Proto.EndReason.COMPLETED)
	if not problem.is_empty():
		return problem
	var pcm_bytes: int = rpc.messages[-1]["end"]["total_samples"] * 4
	if pcm_bytes <= 65536:
		return "only %d bytes of PCM: the line is too short to test flow control" % pcm_bytes
	if stats["window_updates_sent"] < 2:
		return "%d bytes arrived with %d WINDOW_UPDATEs" % [pcm_bytes, stats["window_updates_sent"]]
	print("  flow control: %d PCM bytes, %d WINDOW_UPDATEs" % [pcm_bytes, stats["window_updates_sent"]])
	return "ok"


func test_converse_two_phrases() -> String:
	var rpc := _client.converse()
	rpc.keep_messages = true
	_client.converse_send(rpc, {"context_id": "c1", "config": {"character": "merchant",
		"format": {"encoding": Proto.Encoding.PCM_S16LE}}})
	_client.converse_send(rpc, {"context_id": "c1", "text": "Well met, traveller. "})
	_client.converse_send(rpc, {"context_id": "c1", "text": "Care to see my wares?"})
	_client.converse_send(rpc, {"context_id": "c1", "close": true}, true)
	if not await _until(rpc.is_done):
		return "no end after %d ms" % WAIT_MS
	if rpc.code != GrpcCall.Code.OK:
		return "status %d: %s" % [rpc.code, rpc.status_message]
	var samples := 0
	for m: Dictionary in rpc.messages:
		if m.get("context_id", "") != "c1":
			return "response for context %s, want c1" % m.get("context_id", "")
		if m.has("audio"):
			@warning_ignore("integer_division")
			samples += (m["audio"]["pcm"] as PackedByteArray).size() / 2
	if samples == 0 or not rpc.messages[-1].has("end"):
		return "%d samples, last message %s" % [samples, str(rpc.messages[-1]) if rpc.messages else "none"]
	return "ok"


## The node end to end: signals in order, marks emitted once the audio clock reaches them.
func test_node_plays_line_with_marks_on_the_audio_clock() -> String:
	var node: Node = NpcVoiceNode.new()
	node.address = _addr
	node.character = "guard"
	_tree.root.add_child(node)
	var events: Array = []
	var late: Array = []
	node.speech_started.connect(func() -> void: events.append("started"))
	node.speech_finished.connect(func() -> void: events.append("finished"))
	node.error.connect(func(code: int, message: String) -> void: events.append("error %d %s" % [code, message]))
	node.word.connect(func(label: String) -> void:
		events.append("word " + label)
		if node.playback_position_samples() < node.last_mark_start:
			late.append(label))
	node.viseme.connect(func(_label: String) -> void: events.append("viseme"))
	node.speak("Open the gate.")
	var done := func() -> bool: return events.has("finished") or events.any(func(e: String) -> bool: return e.begins_with("error"))
	var ok := await _until(done)
	node.queue_free()
	if not ok:
		return "no speech_finished after %d ms: %s" % [WAIT_MS, str(events.slice(0, 8))]
	var words := events.filter(func(e: String) -> bool: return e.begins_with("word "))
	if events[0] != "started" or events[-1] != "finished" or words.is_empty() or not events.has("viseme"):
		return "events out of order or missing: %s" % str(events)
	if not late.is_empty():
		return "marks emitted before their audio played: %s" % str(late)
	return "ok"


## cancel() on the node mid-line: speech_finished follows the fade, nothing after it.
func test_node_cancel_mid_line() -> String:
	var node: Node = NpcVoiceNode.new()
	node.address = _addr
	node.character = "guard/node-cancel"
	_tree.root.add_child(node)
	var events: Array = []
	node.speech_started.connect(func() -> void: events.append("started"))
	node.speech_finished.connect(func() -> void: events.append("finished"))
	node.error.connect(func(code: int, message: String) -> void: events.append("error %d %s" % [code, message]))
	node.word.connect(func(label: String) -> void: events.append("word " + label))
	var rpc: GrpcCall = node.speak(LONG_LINE)
	var ok := await _until(func() -> bool: return events.any(func(e: String) -> bool: return not e.begins_with("started")))
	if not ok or not events.has("started"):
		node.queue_free()
		return "no speech after %d ms: %s" % [WAIT_MS, str(events)]
	node.cancel()
	ok = await _until(func() -> bool: return events.has("finished"), [], 20000)
	var after := events.size()
	for i in 30:
		await _tree.process_frame
	node.queue_free()
	if not ok:
		return "no speech_finished after cancel: %s" % str(events)
	if events.size() != after or events[-1] != "finished":
		return "events after speech_finished: %s" % str(events.slice(after - 1))
	if events.any(func(e: String) -> bool: return e.begins_with("error")):
		return "cancel() reported an error: %s" % str(events)
	if rpc.code != GrpcCall.Code.CANCELLED:
		return "the Speak rpc ended with %d, want CANCELLED (1)" % rpc.code
	return "ok"


## What the mixer plays is what the daemon sent: capture the Master bus while the node
## speaks and compare it with the PCM received, sample for sample. Underruns may insert
## silence, so exact zeros are dropped on both sides before comparing.
## NPC_VOICE_GODOT_WAV=path also saves the capture as a WAV for a person to listen to.
func test_node_output_is_the_streamed_pcm() -> String:
	var capture := AudioEffectCapture.new()
	capture.buffer_length = 2.0
	AudioServer.add_bus_effect(0, capture)
	var node: Node = NpcVoiceNode.new()
	node.address = _addr
	node.character = "merchant"
	node.sample_rate = int(AudioServer.get_mix_rate())  # no resampling in Godot: exact compare
	_tree.root.add_child(node)
	var sent := PackedFloat32Array()
	var heard := PackedFloat32Array()
	var done := [false]
	node.speech_finished.connect(func() -> void: done[0] = true)
	node.error.connect(func(_c: int, _m: String) -> void: done[0] = true)
	var rpc: GrpcCall = node.speak("Fresh bread and cheese, only three coins.")
	rpc.message_received.connect(func(m: Dictionary) -> void:
		if m.has("audio"):
			sent.append_array((m["audio"]["pcm"] as PackedByteArray).to_float32_array()))
	capture.clear_buffer()
	var deadline := Time.get_ticks_msec() + WAIT_MS
	while not done[0] and Time.get_ticks_msec() < deadline:
		for f in capture.get_buffer(capture.get_frames_available()):
			heard.append(f.x)
		await _tree.process_frame
	for i in 10:  # the tail still in the mixer
		await _tree.process_frame
		for f in capture.get_buffer(capture.get_frames_available()):
			heard.append(f.x)
	AudioServer.remove_bus_effect(0, AudioServer.get_bus_effect_count(0) - 1)
	node.queue_free()
	var wav_path := OS.get_environment("NPC_VOICE_GODOT_WAV")
	if not wav_path.is_empty():
		_save_wav(wav_path, heard, int(AudioServer.get_mix_rate()))
	if rpc.code != GrpcCall.Code.OK or sent.is_empty():
		return "line failed: status %d %s, %d samples" % [rpc.code, rpc.status_message, sent.size()]
	var a := _nonzero(sent)
	var b := _nonzero(heard)
	if b.size() < a.size():
		return "heard %d non-silent samples of %d sent" % [b.size(), a.size()]
	var worst := 0.0
	for i in a.size():
		worst = maxf(worst, absf(a[i] - b[i]))
	print("  mixer output: %d samples sent, %d heard (%d non-silent), max difference %.7f" % [
		sent.size(), heard.size(), b.size(), worst])
	if worst > 1e-4:
		return "played audio differs from the stream by up to %f" % worst
	return "ok"


static func _nonzero(x: PackedFloat32Array) -> PackedFloat32Array:
	var out := PackedFloat32Array()
	for v in x:
		if v != 0.0:
			out.append(v)
	return out


static func _save_wav(path: String, samples: PackedFloat32Array, rate: int) -> void:
	var pcm := PackedByteArray()
	pcm.resize(samples.size() * 2)
	for i in samples.size():
		pcm.encode_s16(2 * i, clampi(int(samples[i] * 32767.0), -32768, 32767))
	var f := FileAccess.open(path, FileAccess.WRITE)
	if f == null:
		push_error("cannot write %s" % path)
		return
	f.store_buffer("RIFF".to_ascii_buffer())
	f.store_32(36 + pcm.size())
	f.store_buffer("WAVEfmt ".to_ascii_buffer())
	f.store_32(16)
	f.store_16(1)
	f.store_16(1)
	f.store_32(rate)
	f.store_32(rate * 2)
	f.store_16(2)
	f.store_16(16)
	f.store_buffer("data".to_ascii_buffer())
	f.store_32(pcm.size())
	f.store_buffer(pcm)


## Lines on one node with idle time between (the generator runs dry: an underrun that
## lasts) must still play, and a line queued with interrupt = false plays after its turn.
func test_node_speaks_again_after_idle() -> String:
	var node: Node = NpcVoiceNode.new()
	node.address = _addr
	node.character = "witch"
	_tree.root.add_child(node)
	var finished := [0]
	node.speech_finished.connect(func() -> void: finished[0] += 1)
	node.speak("Come closer.")
	var ok := await _until(func() -> bool: return finished[0] == 1)
	var idle_until := Time.get_ticks_msec() + 1000
	while ok and Time.get_ticks_msec() < idle_until:
		await _tree.process_frame
	var playing: bool = node._player.playing
	node.speak("Closer still.")
	node.speak("I won't bite.", "", false)  # queued behind the line in flight
	ok = ok and await _until(func() -> bool: return finished[0] == 3)
	node.queue_free()
	if not ok:
		return "%d of 3 lines finished (player still playing after idle: %s)" % [finished[0], playing]
	return "ok"


## Converse through the node: text in pieces, audio plays, the stream closes cleanly.
func test_node_converse() -> String:
	var node: Node = NpcVoiceNode.new()
	node.address = _addr
	node.character = "merchant"
	_tree.root.add_child(node)
	var events: Array = []
	node.speech_finished.connect(func() -> void: events.append("finished"))
	node.error.connect(func(code: int, message: String) -> void: events.append("error %d %s" % [code, message]))
	var rpc: GrpcCall = node.converse_begin()
	node.converse_text("Well met, traveller. ")
	node.converse_text("Care to see my wares?")
	node.converse_end()
	var ok := await _until(func() -> bool: return rpc.is_done() and not node.is_speaking())
	node.queue_free()
	if not ok or rpc.code != GrpcCall.Code.OK or not events.has("finished") or events.any(func(e: String) -> bool: return e.begins_with("error")):
		return "status %d %s, events %s" % [rpc.code, rpc.status_message, str(events)]
	return "ok"
