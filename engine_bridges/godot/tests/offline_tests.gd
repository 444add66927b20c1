## Tests that need no daemon: HPACK against the shared vectors, protobuf round trips, HTTP/2
## framing against a scripted peer. Each test returns "ok" on success or a failure message.
extends RefCounted

const Hpack = preload("res://addons/npc_voice/hpack.gd")
const Proto = preload("res://addons/npc_voice/proto.gd")
const GrpcCall = preload("res://addons/npc_voice/grpc_call.gd")
const Client = preload("res://addons/npc_voice/client.gd")
const NpcVoiceNode = preload("res://addons/npc_voice/npc_voice.gd")

const VECTORS := "res://tests/testdata/hpack_vectors.json"
const PROTO_VECTORS := "res://tests/testdata/proto_vectors.json"


func test_names() -> Array:
	var names: Array = []
	for m in get_method_list():
		var n: String = m["name"]
		if n.begins_with("test_") and n != "test_names":
			names.append(n)
	return names


func test_hpack_vectors() -> String:
	var text := FileAccess.get_file_as_string(VECTORS)
	var cases: Variant = JSON.parse_string(text)
	if not cases is Array or (cases as Array).is_empty():
		return "could not read %s (%s)" % [VECTORS, error_string(FileAccess.get_open_error())]
	var blocks := 0
	for c: Dictionary in cases:
		var decoder := Hpack.Decoder.new()
		for i in c["blocks"].size():
			var got: Variant = decoder.decode((c["blocks"][i] as String).hex_decode())
			if got == null:
				return "%s block %d: %s" % [c["name"], i, decoder.error]
			if str(got) != str(c["headers"][i]):
				return "%s block %d: got %s, want %s" % [c["name"], i, got, c["headers"][i]]
			blocks += 1
	print("  hpack: %d cases, %d blocks" % [(cases as Array).size(), blocks])
	return "ok"


func test_hpack_rejects_malformed_blocks() -> String:
	var bad := {  # what is wrong: [block, a word the error must contain]
		"index 0": ["80", "index 0"],
		"index past the tables": ["c5", "index 69"],
		"truncated integer": ["ff", "truncated"],
		"string past the end": ["400a6162", "past the block end"],
		"Huffman padding of zeros": ["0001618100", "padding"],  # value: Huffman "0" (00000) then 000
		"size update above the limit": ["3fe21f", "exceeds the limit"],
		"size update after a field": ["8820", "after a header field"],
	}
	for why: String in bad:
		var d := Hpack.Decoder.new(4096)
		if d.decode((bad[why][0] as String).hex_decode()) != null:
			return "%s (%s) was accepted" % [why, bad[why][0]]
		if not d.error.contains(bad[why][1]):
			return "%s: error %s does not say %s" % [why, d.error.c_escape(), bad[why][1]]
	return "ok"


func test_hpack_encoder_round_trip() -> String:
	var headers := [
		[":method", "POST"], [":scheme", "http"], [":path", "/npc_voice.v1.NpcVoice/Speak"],
		[":authority", "127.0.0.1:50051"], ["content-type", "application/grpc"], ["te", "trailers"],
		["x-long", "v".repeat(300)], ["x-utf8", "héllo"],
	]
	var block := Hpack.encode(headers)
	if block[0] != 0x83 or block[1] != 0x86:
		return "POST/http not encoded as static indices 3 and 6: %s" % block.slice(0, 2).hex_encode()
	var d := Hpack.Decoder.new()
	var got: Variant = d.decode(block)
	if str(got) != str(headers):
		return "round trip gave %s" % str(got)
	if not d.entries.is_empty():
		return "the encoder touched the decoder's dynamic table: %s" % str(d.entries)
	return "ok"


func _proto_vectors() -> Dictionary:
	var parsed: Variant = JSON.parse_string(FileAccess.get_file_as_string(PROTO_VECTORS))
	return parsed if parsed is Dictionary else {}


## The Dictionaries below are the messages described in make_proto_vectors.py.
func test_proto_encode_matches_reference() -> String:
	var want := _proto_vectors()
	if want.is_empty():
		return "could not read %s" % PROTO_VECTORS
	var cases := {
		"speak_request": [Proto.SPEAK_REQUEST, {
			"character": "guard/42", "text": "Halt! Who goes there? é",
			"format": {"encoding": Proto.Encoding.PCM_F32LE, "sample_rate_hz": 48000},
			"request_id": "r-1", "overrides": {"speed": 1.25, "pitch_semitones": -2.0, "volume": 0.0}}],
		"speak_request_minimal": [Proto.SPEAK_REQUEST, {"text": "Hi.", "character": "", "request_id": "",
			"busy_policy": Proto.BusyPolicy.UNSPECIFIED}],
		"speak_request_busy": [Proto.SPEAK_REQUEST, {
			"character": "guard/42", "text": "Hi.", "busy_policy": Proto.BusyPolicy.INTERRUPT}],
		"converse_request_config": [Proto.CONVERSE_REQUEST, {
			"context_id": "c1", "config": {"character": "merchant", "max_buffer_delay_ms": 250}}],
		"converse_request_text": [Proto.CONVERSE_REQUEST, {"text": "Well met, "}],
		"converse_request_close": [Proto.CONVERSE_REQUEST, {"close": true}],
		"cancel_request": [Proto.CANCEL_REQUEST, {"character": "guard/42", "request_id": "r-1"}],
		"cancel_response": [Proto.CANCEL_RESPONSE, {"cancelled": true, "samples_produced": 12345}],
	}
	for name: String in cases:
		var got: Variant = Proto.encode(cases[name][1], cases[name][0])
		if got == null or (got as PackedByteArray).hex_encode() != want[name]:
			return "%s: encoded %s, protobuf gives %s" % [name, (got as PackedByteArray).hex_encode() if got else "null", want[name]]
	print("  (an \"unknown field charactr\" error is expected next)")
	if Proto.encode({"charactr": "typo"}, Proto.SPEAK_REQUEST) != null:
		return "an unknown key was accepted"
	return "ok"


func test_proto_decode_reference() -> String:
	var v := _proto_vectors()
	if v.is_empty():
		return "could not read %s" % PROTO_VECTORS
	var start: Variant = Proto.decode((v["speak_response_start"] as String).hex_decode(), Proto.SPEAK_RESPONSE)
	var want_start := {"start": {"format": {"encoding": 1, "sample_rate_hz": 22050}, "request_id": "r-1",
		"character": "guard/42", "voice": "joe"}}
	if str(start) != str(want_start):
		return "start: %s" % str(start)
	var audio: Variant = Proto.decode((v["speak_response_audio"] as String).hex_decode(), Proto.SPEAK_RESPONSE)
	var pcm := PackedByteArray()
	for i in 256:
		pcm.append(i)
	if audio == null or audio.get("context_id") != "c1" or audio["audio"].get("sample_offset") != 5000000000 \
			or audio["audio"].get("pcm") != pcm or audio.size() != 2:
		return "audio (with unknown fields to skip): %s" % str(audio)
	var marks: Variant = Proto.decode((v["speak_response_marks"] as String).hex_decode(), Proto.SPEAK_RESPONSE)
	var want_marks := {"marks": {
		"phonemes": [{"label": "h", "end_sample": 256}, {"label": "ɔ", "start_sample": 256, "end_sample": 1024}],
		"visemes": [{"label": "sil", "end_sample": 256}, {"label": "aa", "start_sample": 256, "end_sample": 1024}],
		"words": [{"label": "Halt", "end_sample": 1024}]}}
	if str(marks) != str(want_marks):
		return "marks: %s" % str(marks)
	var end: Variant = Proto.decode((v["speak_response_end"] as String).hex_decode(), Proto.SPEAK_RESPONSE)
	var want_end := {"end": {"reason": Proto.EndReason.CANCELLED, "total_samples": 44100, "timings": {
		"queued_ms": 0.5, "first_audio_ms": 12.25, "total_ms": 2000.0, "audio_ms": 2000.0}, "request_id": "r-1"}}
	if str(end) != str(want_end):
		return "end: %s" % str(end)
	var cut: Variant = Proto.decode((v["speak_response_end_interrupted"] as String).hex_decode(), Proto.SPEAK_RESPONSE)
	var want_cut := {"end": {"reason": Proto.EndReason.INTERRUPTED, "total_samples": 1000, "request_id": "r-2"}}
	if str(cut) != str(want_cut) or Proto.EndReason.INTERRUPTED != 3:
		return "interrupted end: %s" % str(cut)
	var truncated := (v["speak_response_end"] as String).hex_decode()
	truncated.resize(truncated.size() - 3)
	if Proto.decode(truncated, Proto.SPEAK_RESPONSE) != null or Proto.last_error().is_empty():
		return "a truncated message decoded without error"
	return "ok"


func test_percent_decoded_grpc_message() -> String:
	var got := GrpcCall._percent_decode("text is empty %E2%80%94 100%25 %zz")
	if got != "text is empty — 100% %zz":
		return "got %s" % got
	return "ok"


## A port nobody listens on: the rpc must finish UNAVAILABLE, not hang.
func test_unreachable_daemon_is_unavailable() -> String:
	var probe := TCPServer.new()
	probe.listen(0, "127.0.0.1")
	var port := probe.get_local_port()
	probe.stop()
	var client := Client.new("127.0.0.1:%d" % port)
	client.connect_timeout_ms = 3000
	var rpc := client.speak({"text": "Hello?"})
	var deadline := Time.get_ticks_msec() + 10000
	while not rpc.is_done() and Time.get_ticks_msec() < deadline:
		client.poll()
		OS.delay_msec(5)
	if rpc.code != GrpcCall.Code.UNAVAILABLE:
		return "code %d (%s), want UNAVAILABLE" % [rpc.code, rpc.status_message]
	return "ok"


## The sample scene loads, its scripts compile, and with no daemon it reports the error.
func test_sample_scene_reports_unavailable_daemon() -> String:
	var scene: PackedScene = load("res://sample/sample.tscn")
	if scene == null:
		return "res://sample/sample.tscn did not load"
	var probe := TCPServer.new()
	probe.listen(0, "127.0.0.1")
	var port := probe.get_local_port()
	probe.stop()
	var sample: Node = scene.instantiate()
	var voice: Node = sample.get_node("Guard/NpcVoice")
	voice.address = "127.0.0.1:%d" % port
	var tree := Engine.get_main_loop() as SceneTree
	tree.root.add_child(sample)
	var deadline := Time.get_ticks_msec() + 15000
	var subtitle: Label = sample.get_node("UI/Subtitle")
	while not subtitle.text.begins_with("npc-voice error 14") and Time.get_ticks_msec() < deadline:
		await tree.process_frame
	var text := subtitle.text
	sample.queue_free()
	return "ok" if text.begins_with("npc-voice error 14") else "subtitle shows %s" % text.c_escape()


## cancel() turns the queued audio into a fade of fade_ms and ends the line there; the
## generator then plays it out and speech_finished follows.
func test_node_cancel_fades_queued_audio() -> String:
	var tree := Engine.get_main_loop() as SceneTree
	var node: Node = NpcVoiceNode.new()
	node.sample_rate = 22050
	tree.root.add_child(node)
	node.set_process(false)  # no frames pushed while the line is set up by hand
	node._start_generator(22050)
	var frames := PackedVector2Array()
	frames.resize(22050)
	frames.fill(Vector2(0.5, 0.5))
	node._pending = frames
	node._lines.append({"base": 0, "end": -1, "audio": true, "started": true})
	node._marks = [[100, "words", "early", 0], [20000, "words", "late", 0]]
	var finished := [false]
	var words: Array = []
	node.speech_finished.connect(func() -> void: finished[0] = true)
	node.word.connect(func(w: String) -> void: words.append(w))
	node.cancel()
	var fade: PackedVector2Array = node._pending
	var want := int(node.fade_ms * 22050 / 1000.0)
	if fade.size() != want:
		return "fade of %d frames, want %d" % [fade.size(), want]
	for i in range(1, fade.size()):
		if fade[i].x > fade[i - 1].x or fade[i].x != fade[i].y:
			return "fade not monotonic at frame %d: %s then %s" % [i, fade[i - 1], fade[i]]
	if fade[0].x < 0.49 or fade[-1].x > 0.001:
		return "fade from %s to %s" % [fade[0], fade[-1]]
	if node._lines[0]["end"] != want or node._marks.size() != 1:
		return "line end %d (want %d), marks left %s" % [node._lines[0]["end"], want, str(node._marks)]
	node.set_process(true)
	var deadline := Time.get_ticks_msec() + 10000
	while not finished[0] and Time.get_ticks_msec() < deadline:
		await tree.process_frame
	node.queue_free()
	if not finished[0] or words != ["early"]:
		return "after the fade: finished %s, words %s" % [finished[0], str(words)]
	return "ok"


## Marks arrive before their audio; they must wait until the line's first samples play,
## and come between speech_started and speech_finished.
func test_node_marks_wait_for_their_audio() -> String:
	var tree := Engine.get_main_loop() as SceneTree
	var node: Node = NpcVoiceNode.new()
	tree.root.add_child(node)
	node._start_generator(22050)
	var events: Array = []
	node.speech_started.connect(func() -> void: events.append("started"))
	node.speech_finished.connect(func() -> void: events.append("finished"))
	node.word.connect(func(w: String) -> void: events.append(w))
	node._lines.append({"base": 0, "end": -1, "audio": false, "started": false})
	node._marks = [[0, "words", "first", 0], [1000, "words", "second", 0]]
	for i in 10:
		await tree.process_frame
	if not events.is_empty():
		return "events before any audio: %s" % str(events)
	var frames := PackedVector2Array()
	frames.resize(2205)
	frames.fill(Vector2(0.1, 0.1))
	node._pending = frames
	node._lines[0]["audio"] = true
	node._lines[0]["end"] = 2205
	var deadline := Time.get_ticks_msec() + 10000
	while not events.has("finished") and Time.get_ticks_msec() < deadline:
		await tree.process_frame
	node.queue_free()
	if events != ["started", "first", "second", "finished"]:
		return "events %s" % str(events)
	return "ok"
