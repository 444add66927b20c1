## Cost of the addon's GDScript hot paths, and latency against a daemon (NPC_VOICE_ADDR):
##   godot --headless --path <project> -s res://tests/bench.gd
## Not a test: prints numbers only.
extends SceneTree

const Hpack = preload("res://addons/npc_voice/hpack.gd")
const Proto = preload("res://addons/npc_voice/proto.gd")
const Client = preload("res://addons/npc_voice/client.gd")
const NpcVoiceNode = preload("res://addons/npc_voice/npc_voice.gd")


func _initialize() -> void:
	Engine.max_fps = 240
	_run()


func _time_us(f: Callable, n: int) -> float:
	var t0 := Time.get_ticks_usec()
	for i in n:
		f.call()
	return float(Time.get_ticks_usec() - t0) / n


func _run() -> void:
	await process_frame
	var cases: Array = JSON.parse_string(FileAccess.get_file_as_string("res://tests/testdata/hpack_vectors.json"))
	var block: PackedByteArray = (cases.filter(func(c: Dictionary) -> bool: return c["name"] == "grpc_stream_huffman")[0]["blocks"][0] as String).hex_decode()
	print("hpack decode, grpc-js style Huffman response headers (%d bytes): %.1f us" % [block.size(),
		_time_us(func() -> void: Hpack.Decoder.new().decode(block), 2000)])
	var samples := PackedFloat32Array()
	samples.resize(1024)
	var chunk: PackedByteArray = Proto.encode({"audio": {"pcm": samples.to_byte_array(), "sample_offset": 123456}}, Proto.SPEAK_RESPONSE)
	print("protobuf decode, SpeakResponse with 1024 f32 samples: %.1f us" % _time_us(func() -> void: Proto.decode(chunk, Proto.SPEAK_RESPONSE), 2000))
	var node: Node = NpcVoiceNode.new()
	root.add_child(node)
	var pcm := samples.to_byte_array()
	node._encoding = Proto.Encoding.PCM_F32LE
	print("PCM f32 -> frames, 1024 samples: %.1f us" % _time_us(func() -> void: node._to_frames(pcm), 500))
	node._encoding = Proto.Encoding.PCM_S16LE
	var pcm16 := pcm.slice(0, 2048)
	print("PCM s16 -> frames, 1024 samples: %.1f us" % _time_us(func() -> void: node._to_frames(pcm16), 500))
	var addr := OS.get_environment("NPC_VOICE_ADDR")
	if not addr.is_empty():
		await _latency(addr)
	node.queue_free()
	quit(0)


## speak() -> first audio chunk received, over N lines on one warm connection.
func _latency(addr: String) -> void:
	var client := Client.new(addr)
	var first: Array = []
	var poll_us := 0
	var audio_s := [0.0]  # lambdas capture locals by value: accumulate in an Array
	for i in 6:
		var rpc := client.speak({"character": "guard", "text": "Halt! Who goes there?",
			"format": {"encoding": Proto.Encoding.PCM_F32LE, "sample_rate_hz": 22050}})
		var t0 := Time.get_ticks_usec()
		var got := [0]
		rpc.message_received.connect(func(m: Dictionary) -> void:
			if m.has("audio") and got[0] == 0:
				got[0] = Time.get_ticks_usec() - t0
			if m.has("audio"):
				audio_s[0] += (m["audio"]["pcm"] as PackedByteArray).size() / 4.0 / 22050.0)
		while not rpc.is_done():
			var p0 := Time.get_ticks_usec()
			client.poll()
			poll_us += Time.get_ticks_usec() - p0
			await process_frame
		if i > 0:  # the first line warms the connection and the daemon
			first.append(got[0] / 1000.0)
	first.sort()
	print("speak -> first audio chunk (ms, 5 warm lines): median %.1f, min %.1f, max %.1f" % [first[2], first[0], first[-1]])
	print("client.poll() CPU: %.2f ms per second of audio received (HTTP/2 + gRPC + protobuf)" % [poll_us / 1000.0 / audio_s[0]])
	client.close()
