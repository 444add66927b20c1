## Protocol Buffers (proto3) encoding and decoding for the npc_voice.v1 messages the addon
## uses, driven by small schemas that mirror proto/npc_voice/v1/npc_voice.proto.
##
## Messages are Dictionaries keyed by field name. Encoding rejects unknown keys (a typo
## would otherwise be silently dropped); decoding skips unknown fields (newer daemons) and
## leaves absent fields out of the Dictionary, so read them with .get(name, default).
##
## Schema entry: field number -> [name, kind] or [name, kind, sub_schema]. Kinds: "string",
## "bytes", "varint" (uint32/uint64/enum), "bool", "float", "double", "msg", "repeated"
## (repeated message). A trailing "!" means explicit presence (proto3 `optional` or oneof):
## the field is written whenever its key is present, even with a default value.
extends RefCounted

enum Encoding { UNSPECIFIED = 0, PCM_S16LE = 1, PCM_F32LE = 2 }
## INTERRUPTED: a newer Speak for the same character with BusyPolicy.INTERRUPT cut the line off.
enum EndReason { UNSPECIFIED = 0, COMPLETED = 1, CANCELLED = 2, INTERRUPTED = 3 }
## SpeakRequest "busy_policy": what Speak does when the character is already speaking.
## UNSPECIFIED = QUEUE (wait behind its line); INTERRUPT (end that line, speak now);
## REJECT (RESOURCE_EXHAUSTED at once).
enum BusyPolicy { UNSPECIFIED = 0, QUEUE = 1, INTERRUPT = 2, REJECT = 3 }

const AUDIO_FORMAT := {1: ["encoding", "varint"], 2: ["sample_rate_hz", "varint"]}
const VOICE_OVERRIDES := {
	1: ["speed", "float!"], 2: ["pitch_semitones", "float!"], 3: ["volume", "float!"],
	4: ["formant", "float!"], 5: ["breathiness", "float!"],
}
const SPEAK_REQUEST := {
	1: ["character", "string"], 2: ["text", "string"], 3: ["format", "msg", AUDIO_FORMAT],
	4: ["request_id", "string"], 5: ["overrides", "msg", VOICE_OVERRIDES], 6: ["busy_policy", "varint"],
}
const CONVERSE_CONFIG := {
	1: ["character", "string"], 2: ["format", "msg", AUDIO_FORMAT], 3: ["overrides", "msg", VOICE_OVERRIDES],
	4: ["max_buffer_delay_ms", "varint"], 5: ["request_id", "string"],
}
const CONVERSE_REQUEST := {
	1: ["context_id", "string"], 2: ["config", "msg", CONVERSE_CONFIG], 3: ["text", "string!"],
	4: ["flush", "bool!"], 5: ["cancel", "bool!"], 6: ["close", "bool!"],
}
const CANCEL_REQUEST := {1: ["character", "string"], 2: ["request_id", "string"]}
const CANCEL_RESPONSE := {1: ["cancelled", "bool"], 2: ["samples_produced", "varint"]}
const STREAM_START := {
	1: ["format", "msg", AUDIO_FORMAT], 2: ["request_id", "string"], 3: ["character", "string"],
	4: ["voice", "string"],
}
const AUDIO_CHUNK := {1: ["pcm", "bytes"], 2: ["sample_offset", "varint"]}
const MARK := {1: ["label", "string"], 2: ["start_sample", "varint"], 3: ["end_sample", "varint"]}
const MARKS := {1: ["phonemes", "repeated", MARK], 2: ["visemes", "repeated", MARK], 3: ["words", "repeated", MARK]}
const TIMINGS := {
	1: ["queued_ms", "double"], 2: ["first_audio_ms", "double"], 3: ["total_ms", "double"],
	4: ["audio_ms", "double"],
}
const STREAM_END := {
	1: ["reason", "varint"], 2: ["total_samples", "varint"], 3: ["timings", "msg", TIMINGS],
	4: ["request_id", "string"],
}
const SPEAK_RESPONSE := {
	1: ["context_id", "string"], 2: ["start", "msg", STREAM_START], 3: ["audio", "msg", AUDIO_CHUNK],
	4: ["marks", "msg", MARKS], 5: ["end", "msg", STREAM_END],
}

const _WIRE_VARINT := 0
const _WIRE_I64 := 1
const _WIRE_LEN := 2
const _WIRE_I32 := 5


## Encode `message` with `schema`. Returns the bytes, or null (with push_error naming the
## bad key or value) when the Dictionary does not fit the schema.
static func encode(message: Dictionary, schema: Dictionary) -> Variant:
	var out := PackedByteArray()
	_last_error = _encode_into(out, message, schema)
	if not _last_error.is_empty():
		push_error("npc_voice proto: " + _last_error)
		return null
	return out


static func _encode_into(out: PackedByteArray, message: Dictionary, schema: Dictionary) -> String:
	var by_name := {}
	for number: int in schema:
		by_name[schema[number][0]] = number
	for key: Variant in message:
		if not by_name.has(key):
			return "unknown field %s (expected one of %s)" % [str(key), str(by_name.keys())]
	var numbers := schema.keys()
	numbers.sort()
	for number: int in numbers:
		var entry: Array = schema[number]
		var name: String = entry[0]
		if not message.has(name):
			continue
		var kind: String = entry[1]
		var explicit := kind.ends_with("!")
		kind = kind.trim_suffix("!")
		var value: Variant = message[name]
		match kind:
			"string", "bytes":
				var raw: PackedByteArray
				if kind == "string" and value is String:
					raw = (value as String).to_utf8_buffer()
				elif kind == "bytes" and value is PackedByteArray:
					raw = value
				else:
					return "field %s wants %s, got %s" % [name, kind, type_string(typeof(value))]
				if raw.is_empty() and not explicit:
					continue
				_put_varint(out, number << 3 | _WIRE_LEN)
				_put_varint(out, raw.size())
				out.append_array(raw)
			"varint", "bool":
				if not (value is int or value is bool):
					return "field %s wants an integer, got %s" % [name, str(value)]
				var v := int(value)
				if kind == "varint" and v < 0:
					return "field %s is unsigned, got %d" % [name, v]
				if v == 0 and not explicit:
					continue
				_put_varint(out, number << 3 | _WIRE_VARINT)
				_put_varint(out, v)
			"float", "double":
				if not (value is float or value is int):
					return "field %s wants a number, got %s" % [name, str(value)]
				if float(value) == 0.0 and not explicit:
					continue
				var raw := PackedByteArray()
				if kind == "float":
					raw.resize(4)
					raw.encode_float(0, float(value))
					_put_varint(out, number << 3 | _WIRE_I32)
				else:
					raw.resize(8)
					raw.encode_double(0, float(value))
					_put_varint(out, number << 3 | _WIRE_I64)
				out.append_array(raw)
			"msg", "repeated":
				var items: Array = value if kind == "repeated" and value is Array else [value]
				for item: Variant in items:
					if not item is Dictionary:
						return "field %s wants a Dictionary, got %s" % [name, str(item)]
					var sub := PackedByteArray()
					var err := _encode_into(sub, item, entry[2])
					if not err.is_empty():
						return "%s.%s" % [name, err]
					_put_varint(out, number << 3 | _WIRE_LEN)
					_put_varint(out, sub.size())
					out.append_array(sub)
			_:
				return "schema kind %s of field %s is not supported" % [kind, name]
	return ""


## Unsigned LEB128; a negative int is written as its 64-bit two's complement (10 bytes).
static func _put_varint(out: PackedByteArray, value: int) -> void:
	for i in 10:
		var low := value & 0x7f
		value = (value >> 7) & 0x01ffffffffffffff  # logical shift
		if value == 0:
			out.append(low)
			return
		out.append(low | 0x80)


## Decode `data` with `schema`. Returns the Dictionary, or null when the bytes are malformed
## (last_error() says why).
static func decode(data: PackedByteArray, schema: Dictionary) -> Variant:
	var reader := _Reader.new(data)
	var message: Variant = reader.read_message(0, data.size(), schema)
	_last_error = reader.error
	return message


static var _last_error := ""


static func last_error() -> String:
	return _last_error


class _Reader:
	extends RefCounted

	var data: PackedByteArray
	var pos := 0
	var error := ""

	func _init(bytes: PackedByteArray) -> void:
		data = bytes

	func read_message(from: int, to: int, schema: Dictionary) -> Variant:
		pos = from
		var out := {}
		while pos < to and error.is_empty():
			var key := varint(to)
			var number := key >> 3
			var wire := key & 7
			var entry: Array = schema.get(number, [])
			var kind: String = entry[1].trim_suffix("!") if not entry.is_empty() else ""
			match wire:
				_WIRE_VARINT:
					var v := varint(to)
					if kind == "bool":
						out[entry[0]] = v != 0
					elif kind == "varint":
						out[entry[0]] = v
					elif not kind.is_empty():
						return _fail("field %d: varint for a %s" % [number, kind])
				_WIRE_I64:
					if pos + 8 > to:
						return _fail("field %d: truncated fixed64" % number)
					if kind == "double":
						out[entry[0]] = data.decode_double(pos)
					elif not kind.is_empty():
						return _fail("field %d: fixed64 for a %s" % [number, kind])
					pos += 8
				_WIRE_I32:
					if pos + 4 > to:
						return _fail("field %d: truncated fixed32" % number)
					if kind == "float":
						out[entry[0]] = data.decode_float(pos)
					elif not kind.is_empty():
						return _fail("field %d: fixed32 for a %s" % [number, kind])
					pos += 4
				_WIRE_LEN:
					var length := varint(to)
					if length < 0 or pos + length > to:
						return _fail("field %d: length %d runs past the message end" % [number, length])
					var end := pos + length
					match kind:
						"string":
							out[entry[0]] = data.slice(pos, end).get_string_from_utf8()
						"bytes":
							out[entry[0]] = data.slice(pos, end)
						"msg", "repeated":
							var sub: Variant = read_message(pos, end, entry[2])
							if sub == null:
								return null
							if kind == "msg":
								out[entry[0]] = sub
							else:
								if not out.has(entry[0]):
									out[entry[0]] = []
								out[entry[0]].append(sub)
						"":
							pass
						_:
							return _fail("field %d: length-delimited for a %s" % [number, kind])
					pos = end
				_:
					return _fail("field %d: unsupported wire type %d" % [number, wire])
		if not error.is_empty():
			return null
		return out

	func varint(to: int) -> int:
		var value := 0
		var shift := 0
		while shift < 64:
			if pos >= to:
				_fail("truncated varint")
				return 0
			var b := data[pos]
			pos += 1
			value |= (b & 0x7f) << shift
			if (b & 0x80) == 0:
				return value
			shift += 7
		_fail("varint longer than 10 bytes")
		return 0

	func _fail(message: String) -> Variant:
		if error.is_empty():
			error = message
		return null
