## Live tests of the NpcVoice node (audio, marks, cancel, queueing) against the daemon at
## NPC_VOICE_ADDR.
extends "res://tests/live_base.gd"


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
		if node.playback_position_samples() <= node.last_mark_start:
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
