## Live tests of the gRPC client (no audio) against the daemon at NPC_VOICE_ADDR.
extends "res://tests/live_base.gd"


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
