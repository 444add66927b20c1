## HPACK (RFC 7541) for the npc-voice HTTP/2 client.
##
## Decoder: the full format (static and dynamic table, table size updates, Huffman strings,
## all literal kinds), one per connection since the dynamic table spans header blocks.
## Encoder: static-table references and literals without indexing only, so the peer's
## dynamic table is never touched and nothing needs to be tracked on our side.
extends RefCounted

## RFC 7541 Appendix A; index 1 is element 0.
const STATIC_TABLE: Array = [
	[":authority", ""], [":method", "GET"], [":method", "POST"],
	[":path", "/"], [":path", "/index.html"], [":scheme", "http"],
	[":scheme", "https"], [":status", "200"], [":status", "204"],
	[":status", "206"], [":status", "304"], [":status", "400"],
	[":status", "404"], [":status", "500"], ["accept-charset", ""],
	["accept-encoding", "gzip, deflate"], ["accept-language", ""], ["accept-ranges", ""],
	["accept", ""], ["access-control-allow-origin", ""], ["age", ""],
	["allow", ""], ["authorization", ""], ["cache-control", ""],
	["content-disposition", ""], ["content-encoding", ""], ["content-language", ""],
	["content-length", ""], ["content-location", ""], ["content-range", ""],
	["content-type", ""], ["cookie", ""], ["date", ""],
	["etag", ""], ["expect", ""], ["expires", ""],
	["from", ""], ["host", ""], ["if-match", ""],
	["if-modified-since", ""], ["if-none-match", ""], ["if-range", ""],
	["if-unmodified-since", ""], ["last-modified", ""], ["link", ""],
	["location", ""], ["max-forwards", ""], ["proxy-authenticate", ""],
	["proxy-authorization", ""], ["range", ""], ["referer", ""],
	["refresh", ""], ["retry-after", ""], ["server", ""],
	["set-cookie", ""], ["strict-transport-security", ""], ["transfer-encoding", ""],
	["user-agent", ""], ["vary", ""], ["via", ""],
	["www-authenticate", ""],
]

## RFC 7541 Appendix B: code, bit length for symbols 0..255 and EOS (256).
const HUFFMAN: Array = [
	0x1ff8, 13, 0x7fffd8, 23, 0xfffffe2, 28, 0xfffffe3, 28, 0xfffffe4, 28, 0xfffffe5, 28, 0xfffffe6, 28, 0xfffffe7, 28,
	0xfffffe8, 28, 0xffffea, 24, 0x3ffffffc, 30, 0xfffffe9, 28, 0xfffffea, 28, 0x3ffffffd, 30, 0xfffffeb, 28, 0xfffffec, 28,
	0xfffffed, 28, 0xfffffee, 28, 0xfffffef, 28, 0xffffff0, 28, 0xffffff1, 28, 0xffffff2, 28, 0x3ffffffe, 30, 0xffffff3, 28,
	0xffffff4, 28, 0xffffff5, 28, 0xffffff6, 28, 0xffffff7, 28, 0xffffff8, 28, 0xffffff9, 28, 0xffffffa, 28, 0xffffffb, 28,
	0x14, 6, 0x3f8, 10, 0x3f9, 10, 0xffa, 12, 0x1ff9, 13, 0x15, 6, 0xf8, 8, 0x7fa, 11,
	0x3fa, 10, 0x3fb, 10, 0xf9, 8, 0x7fb, 11, 0xfa, 8, 0x16, 6, 0x17, 6, 0x18, 6,
	0x0, 5, 0x1, 5, 0x2, 5, 0x19, 6, 0x1a, 6, 0x1b, 6, 0x1c, 6, 0x1d, 6,
	0x1e, 6, 0x1f, 6, 0x5c, 7, 0xfb, 8, 0x7ffc, 15, 0x20, 6, 0xffb, 12, 0x3fc, 10,
	0x1ffa, 13, 0x21, 6, 0x5d, 7, 0x5e, 7, 0x5f, 7, 0x60, 7, 0x61, 7, 0x62, 7,
	0x63, 7, 0x64, 7, 0x65, 7, 0x66, 7, 0x67, 7, 0x68, 7, 0x69, 7, 0x6a, 7,
	0x6b, 7, 0x6c, 7, 0x6d, 7, 0x6e, 7, 0x6f, 7, 0x70, 7, 0x71, 7, 0x72, 7,
	0xfc, 8, 0x73, 7, 0xfd, 8, 0x1ffb, 13, 0x7fff0, 19, 0x1ffc, 13, 0x3ffc, 14, 0x22, 6,
	0x7ffd, 15, 0x3, 5, 0x23, 6, 0x4, 5, 0x24, 6, 0x5, 5, 0x25, 6, 0x26, 6,
	0x27, 6, 0x6, 5, 0x74, 7, 0x75, 7, 0x28, 6, 0x29, 6, 0x2a, 6, 0x7, 5,
	0x2b, 6, 0x76, 7, 0x2c, 6, 0x8, 5, 0x9, 5, 0x2d, 6, 0x77, 7, 0x78, 7,
	0x79, 7, 0x7a, 7, 0x7b, 7, 0x7ffe, 15, 0x7fc, 11, 0x3ffd, 14, 0x1ffd, 13, 0xffffffc, 28,
	0xfffe6, 20, 0x3fffd2, 22, 0xfffe7, 20, 0xfffe8, 20, 0x3fffd3, 22, 0x3fffd4, 22, 0x3fffd5, 22, 0x7fffd9, 23,
	0x3fffd6, 22, 0x7fffda, 23, 0x7fffdb, 23, 0x7fffdc, 23, 0x7fffdd, 23, 0x7fffde, 23, 0xffffeb, 24, 0x7fffdf, 23,
	0xffffec, 24, 0xffffed, 24, 0x3fffd7, 22, 0x7fffe0, 23, 0xffffee, 24, 0x7fffe1, 23, 0x7fffe2, 23, 0x7fffe3, 23,
	0x7fffe4, 23, 0x1fffdc, 21, 0x3fffd8, 22, 0x7fffe5, 23, 0x3fffd9, 22, 0x7fffe6, 23, 0x7fffe7, 23, 0xffffef, 24,
	0x3fffda, 22, 0x1fffdd, 21, 0xfffe9, 20, 0x3fffdb, 22, 0x3fffdc, 22, 0x7fffe8, 23, 0x7fffe9, 23, 0x1fffde, 21,
	0x7fffea, 23, 0x3fffdd, 22, 0x3fffde, 22, 0xfffff0, 24, 0x1fffdf, 21, 0x3fffdf, 22, 0x7fffeb, 23, 0x7fffec, 23,
	0x1fffe0, 21, 0x1fffe1, 21, 0x3fffe0, 22, 0x1fffe2, 21, 0x7fffed, 23, 0x3fffe1, 22, 0x7fffee, 23, 0x7fffef, 23,
	0xfffea, 20, 0x3fffe2, 22, 0x3fffe3, 22, 0x3fffe4, 22, 0x7ffff0, 23, 0x3fffe5, 22, 0x3fffe6, 22, 0x7ffff1, 23,
	0x3ffffe0, 26, 0x3ffffe1, 26, 0xfffeb, 20, 0x7fff1, 19, 0x3fffe7, 22, 0x7ffff2, 23, 0x3fffe8, 22, 0x1ffffec, 25,
	0x3ffffe2, 26, 0x3ffffe3, 26, 0x3ffffe4, 26, 0x7ffffde, 27, 0x7ffffdf, 27, 0x3ffffe5, 26, 0xfffff1, 24, 0x1ffffed, 25,
	0x7fff2, 19, 0x1fffe3, 21, 0x3ffffe6, 26, 0x7ffffe0, 27, 0x7ffffe1, 27, 0x3ffffe7, 26, 0x7ffffe2, 27, 0xfffff2, 24,
	0x1fffe4, 21, 0x1fffe5, 21, 0x3ffffe8, 26, 0x3ffffe9, 26, 0xffffffd, 28, 0x7ffffe3, 27, 0x7ffffe4, 27, 0x7ffffe5, 27,
	0xfffec, 20, 0xfffff3, 24, 0xfffed, 20, 0x1fffe6, 21, 0x3fffe9, 22, 0x1fffe7, 21, 0x1fffe8, 21, 0x7ffff3, 23,
	0x3fffea, 22, 0x3fffeb, 22, 0x1ffffee, 25, 0x1ffffef, 25, 0xfffff4, 24, 0xfffff5, 24, 0x3ffffea, 26, 0x7ffff4, 23,
	0x3ffffeb, 26, 0x7ffffe6, 27, 0x3ffffec, 26, 0x3ffffed, 26, 0x7ffffe7, 27, 0x7ffffe8, 27, 0x7ffffe9, 27, 0x7ffffea, 27,
	0x7ffffeb, 27, 0xffffffe, 28, 0x7ffffec, 27, 0x7ffffed, 27, 0x7ffffee, 27, 0x7ffffef, 27, 0x7fffff0, 27, 0x3ffffee, 26,
	0x3fffffff, 30,
]

const EOS := 256

static var _static_index: Dictionary = {}


## "name" -> first static index with that name, "name\nvalue" -> exact static index.
static func _static_lookup() -> Dictionary:
	if _static_index.is_empty():
		for i in STATIC_TABLE.size():
			var name: String = STATIC_TABLE[i][0]
			var value: String = STATIC_TABLE[i][1]
			if not _static_index.has(name):
				_static_index[name] = i + 1
			_static_index[name + "\n" + value] = i + 1
	return _static_index


static func _put_int(out: PackedByteArray, flags: int, prefix_bits: int, value: int) -> void:
	var limit := (1 << prefix_bits) - 1
	if value < limit:
		out.append(flags | value)
		return
	out.append(flags | limit)
	value -= limit
	while value >= 128:
		out.append((value & 0x7f) | 0x80)
		value >>= 7
	out.append(value)


static func _put_string(out: PackedByteArray, text: String) -> void:
	var raw := text.to_utf8_buffer()
	_put_int(out, 0, 7, raw.size())
	out.append_array(raw)


## Encode [[name, value], ...] (names lowercase) as one header block. Exact static matches
## become indexed fields, everything else a literal without indexing.
static func encode(headers: Array) -> PackedByteArray:
	var index := _static_lookup()
	var out := PackedByteArray()
	for header: Array in headers:
		var name: String = header[0]
		var value: String = header[1]
		var exact: int = index.get(name + "\n" + value, 0)
		if exact > 0:
			_put_int(out, 0x80, 7, exact)
			continue
		var by_name: int = index.get(name, 0)
		_put_int(out, 0x00, 4, by_name)
		if by_name == 0:
			_put_string(out, name)
		_put_string(out, value)
	return out


## Decodes header blocks of one connection in order. After a failed decode() the
## connection must be closed (COMPRESSION_ERROR): the table state is then undefined.
class Decoder:
	extends RefCounted

	## The limit we advertised in SETTINGS_HEADER_TABLE_SIZE; size updates may not exceed it.
	var max_table_size: int
	## Current dynamic table capacity (set by size updates), and bytes in use.
	var table_capacity: int
	var table_bytes := 0
	## Newest first: [name, value, size] with size = 32 + byte lengths (RFC 7541 4.1).
	var entries: Array = []
	var error := ""

	var _buf: PackedByteArray
	var _pos := 0

	## Huffman decode tree, built once from HUFFMAN: node n has its children at 2n (bit 0)
	## and 2n+1 (bit 1); a child > 0 is a node, < 0 is the leaf -(symbol + 1).
	static var _tree: PackedInt32Array = PackedInt32Array()

	static func _huffman_tree() -> PackedInt32Array:
		if not _tree.is_empty():
			return _tree
		var tree := PackedInt32Array([0, 0])
		var nodes := 1
		for sym in HUFFMAN.size() >> 1:
			var code: int = HUFFMAN[2 * sym]
			var bits: int = HUFFMAN[2 * sym + 1]
			var node := 0
			for b in range(bits - 1, -1, -1):
				var slot := 2 * node + ((code >> b) & 1)
				if b == 0:
					tree[slot] = -(sym + 1)
				else:
					if tree[slot] == 0:
						tree[slot] = nodes
						nodes += 1
						tree.append(0)
						tree.append(0)
					node = tree[slot]
		_tree = tree
		return tree

	func _init(max_size: int = 4096) -> void:
		max_table_size = max_size
		table_capacity = max_size

	## Returns [[name, value], ...], or null with `error` set.
	func decode(block: PackedByteArray) -> Variant:
		_buf = block
		_pos = 0
		error = ""
		var headers: Array = []
		while _pos < _buf.size() and error.is_empty():
			var b := _buf[_pos]
			if b & 0x80:
				var idx := _int(7)
				var entry: Variant = _lookup(idx)
				if entry != null:
					headers.append([entry[0], entry[1]])
			elif b & 0x40:
				var field: Variant = _literal(6)
				if field != null:
					headers.append(field)
					_insert(field[0], field[1])
			elif b & 0x20:
				if not headers.is_empty():
					return _fail("dynamic table size update after a header field")
				var size := _int(5)
				if size > max_table_size:
					return _fail("table size update to %d exceeds the limit %d" % [size, max_table_size])
				table_capacity = size
				_evict(0)
			else:
				# 0000xxxx without indexing, 0001xxxx never indexed: both leave the table alone.
				var field: Variant = _literal(4)
				if field != null:
					headers.append(field)
		if not error.is_empty():
			return null
		return headers

	func _fail(message: String) -> Variant:
		if error.is_empty():
			error = message
		return null

	func _int(prefix_bits: int) -> int:
		var limit := (1 << prefix_bits) - 1
		var value := _buf[_pos] & limit
		_pos += 1
		if value < limit:
			return value
		var shift := 0
		while true:
			if _pos >= _buf.size():
				_fail("truncated integer")
				return 0
			var b := _buf[_pos]
			_pos += 1
			value += (b & 0x7f) << shift
			shift += 7
			if (b & 0x80) == 0:
				break
			if shift > 28:
				_fail("integer longer than 5 bytes")
				return 0
		return value

	func _lookup(idx: int) -> Variant:
		if idx >= 1 and idx <= STATIC_TABLE.size():
			return STATIC_TABLE[idx - 1]
		var d := idx - STATIC_TABLE.size() - 1
		if d >= 0 and d < entries.size():
			return entries[d]
		return _fail("header index %d out of range (dynamic table has %d entries)" % [idx, entries.size()])

	func _literal(prefix_bits: int) -> Variant:
		var name_idx := _int(prefix_bits)
		var name := ""
		if name_idx == 0:
			name = _string()
		else:
			var entry: Variant = _lookup(name_idx)
			if entry != null:
				name = entry[0]
		var value := _string()
		if not error.is_empty():
			return null
		return [name, value]

	func _string() -> String:
		if not error.is_empty():
			return ""
		if _pos >= _buf.size():
			_fail("truncated string")
			return ""
		var huffman := (_buf[_pos] & 0x80) != 0
		var length := _int(7)
		if not error.is_empty():
			return ""
		if _pos + length > _buf.size():
			_fail("string of %d bytes runs past the block end" % length)
			return ""
		var raw: PackedByteArray
		if huffman:
			raw = _huffman(_pos, _pos + length)
		else:
			raw = _buf.slice(_pos, _pos + length)
		_pos += length
		return raw.get_string_from_utf8()

	func _huffman(from: int, to: int) -> PackedByteArray:
		var tree := _huffman_tree()
		var out := PackedByteArray()
		var node := 0
		var pending_bits := 0  # bits read since the last symbol: only EOS-prefix padding may remain
		var all_ones := true
		for i in range(from, to):
			var byte := _buf[i]
			for b in range(7, -1, -1):
				var bit := (byte >> b) & 1
				var next := tree[2 * node + bit]
				if next < 0:
					if next == -(EOS + 1):
						_fail("Huffman string contains EOS")
						return out
					out.append(-next - 1)
					node = 0
					pending_bits = 0
					all_ones = true
				else:
					node = next
					pending_bits += 1
					all_ones = all_ones and bit == 1
		if pending_bits > 7 or not all_ones:
			_fail("invalid Huffman padding (%d bits)" % pending_bits)
		return out

	func _insert(name: String, value: String) -> void:
		var size := 32 + name.to_utf8_buffer().size() + value.to_utf8_buffer().size()
		_evict(size)
		if size <= table_capacity:
			entries.push_front([name, value, size])
			table_bytes += size

	## Drop the oldest entries until `room` more bytes fit (an entry larger than the
	## whole table empties it, RFC 7541 4.4).
	func _evict(room: int) -> void:
		while not entries.is_empty() and table_bytes + room > table_capacity:
			table_bytes -= int(entries.pop_back()[2])
