## Headless test suite for the npc_voice addon:
##   godot --headless --path <project> -s res://tests/test_main.gd
## Offline tests (HPACK vectors, protobuf, HTTP/2 edge cases against a scripted peer)
## always run; live tests run
## against the daemon at NPC_VOICE_ADDR (host:port) and are counted as skipped without it.
## Prints "PASS name" / "FAIL name: why" / "SKIP name: why" per test and, last,
## "npc-voice-godot-summary passed=N failed=N skipped=N" (run_tests.sh turns it into the
## suite's final line).
extends SceneTree

const OfflineTests = preload("res://tests/offline_tests.gd")
const H2PeerTests = preload("res://tests/h2_peer_tests.gd")
const LiveTests = preload("res://tests/live_tests.gd")
const NodeLiveTests = preload("res://tests/node_live_tests.gd")
const NpcVoiceNode = preload("res://addons/npc_voice/npc_voice.gd")

var _passed := 0
var _failed := 0
var _skipped := 0


func _initialize() -> void:
	Engine.max_fps = 240  # the live tests await frames; do not spin the CPU
	_run()


func _run() -> void:
	await process_frame  # let the root enter the tree before tests add nodes
	var only := OS.get_environment("NPC_VOICE_GODOT_TESTS")  # optional substring filter
	for suite: RefCounted in [OfflineTests.new(), H2PeerTests.new()]:
		for name: String in suite.test_names():
			if only.is_empty() or name.contains(only):
				_report(name, await suite.call(name))
	var addr := OS.get_environment("NPC_VOICE_ADDR")
	for suite: RefCounted in [LiveTests.new(self, addr), NodeLiveTests.new(self, addr)]:
		for name: String in suite.test_names():
			if not (only.is_empty() or name.contains(only)):
				continue
			if addr.is_empty():
				_skipped += 1
				print("SKIP %s: NPC_VOICE_ADDR is not set (no daemon to talk to)" % name)
				continue
			_report(name, await suite.call(name))
		suite.shutdown()
	NpcVoiceNode.close_shared_clients()
	print("npc-voice-godot-summary passed=%d failed=%d skipped=%d" % [_passed, _failed, _skipped])
	quit(1 if _failed > 0 else 0)


func _report(name: String, result: Variant) -> void:
	# A test returns "ok"; a script error inside it makes the call return "" or null.
	if result is String and result == "ok":
		_passed += 1
		print("PASS %s" % name)
	else:
		_failed += 1
		var why: String = "aborted by a script error (see above)" if result == null or str(result).is_empty() else str(result)
		print("FAIL %s: %s" % [name, why])
