## Sample: a guard that speaks a line on start and on "Speak", with subtitles from `word`
## signals and a mouth that opens on vowel visemes. Set the daemon address on the
## Guard/NpcVoice node (default 127.0.0.1:50051, where `npc-voice serve` listens).
extends Node3D

## Lines the guard cycles through.
@export var lines: PackedStringArray = [
	"Halt! Who goes there?",
	"The gate closes at sundown. State your business, traveller.",
	"Move along, and keep your blade sheathed in the city.",
]
@export var auto_speak := true

const OPEN_VISEMES := ["aa", "E", "ih", "oh", "ou"]

var _next := 0

@onready var _voice: Node = $Guard/NpcVoice
@onready var _mouth: Node3D = $Guard/Mouth
@onready var _subtitle: Label = $UI/Subtitle


func _ready() -> void:
	$UI/Speak.pressed.connect(_speak_next)
	$UI/Stop.pressed.connect(_voice.cancel)
	_voice.speech_started.connect(func() -> void: _subtitle.text = "")
	_voice.word.connect(func(label: String) -> void: _subtitle.text += label + " ")
	_voice.viseme.connect(func(label: String) -> void:
		_mouth.scale.y = 3.0 if OPEN_VISEMES.has(label) else 1.0)
	_voice.speech_finished.connect(func() -> void: _mouth.scale.y = 1.0)
	_voice.error.connect(func(code: int, message: String) -> void:
		_subtitle.text = "npc-voice error %d: %s" % [code, message])
	if auto_speak:
		_speak_next()


func _speak_next() -> void:
	_voice.speak(lines[_next % lines.size()])
	_next += 1
