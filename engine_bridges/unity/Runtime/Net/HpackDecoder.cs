using System;
using System.Collections.Generic;
using System.Text;

namespace NpcVoice.Net
{
    /// <summary>One decoded header field. Names and values are octets read as UTF-8 (gRPC metadata is ASCII).</summary>
    public struct HeaderField
    {
        public readonly string Name;
        public readonly string Value;

        public HeaderField(string name, string value)
        {
            Name = name;
            Value = value;
        }

        public override string ToString() => Name + ": " + Value;
    }

    /// <summary>
    /// Full HPACK decoder (RFC 7541): static and dynamic table, dynamic table size updates, Huffman strings,
    /// all literal representations. One decoder per connection; header blocks must be decoded in the order they
    /// arrive, because each block may change the dynamic table that later blocks refer to.
    /// </summary>
    public sealed class HpackDecoder
    {
        private struct Entry
        {
            public HeaderField Field;
            public int Size;  // octets of name + value + 32 (RFC 7541 section 4.1)
        }

        // Newest entry first: dynamic index 0 is HPACK index 62.
        private readonly LinkedList<Entry> _dynamic = new LinkedList<Entry>();
        private readonly List<Entry> _index = new List<Entry>();  // rebuilt lazily from _dynamic
        private bool _indexStale;
        private int _size;
        private int _maxSize;
        private readonly int _settingsMaxSize;

        /// <param name="settingsMaxSize">The SETTINGS_HEADER_TABLE_SIZE this endpoint advertised (the upper bound
        /// for size updates the peer may send).</param>
        public HpackDecoder(int settingsMaxSize = 4096)
        {
            _settingsMaxSize = settingsMaxSize;
            _maxSize = settingsMaxSize;
        }

        /// <summary>Octets currently held in the dynamic table (with the 32-octet overhead per entry).</summary>
        public int DynamicTableSize => _size;

        public int DynamicTableCount => _dynamic.Count;

        public List<HeaderField> Decode(byte[] block) => Decode(block, 0, block.Length);

        public List<HeaderField> Decode(byte[] block, int offset, int count)
        {
            var headers = new List<HeaderField>();
            int pos = offset;
            int end = offset + count;
            bool fieldSeen = false;
            while (pos < end)
            {
                byte b = block[pos];
                if ((b & 0x80) != 0)
                {
                    int index = (int)ReadInteger(block, ref pos, end, 7);
                    if (index == 0)
                    {
                        throw new HpackException("indexed header field with index 0");
                    }
                    headers.Add(Lookup(index));
                    fieldSeen = true;
                }
                else if ((b & 0xC0) == 0x40)
                {
                    HeaderField field = ReadLiteral(block, ref pos, end, 6);
                    headers.Add(field);
                    Add(field);
                    fieldSeen = true;
                }
                else if ((b & 0xE0) == 0x20)
                {
                    if (fieldSeen)
                    {
                        throw new HpackException("dynamic table size update after a header field");
                    }
                    long newSize = ReadInteger(block, ref pos, end, 5);
                    if (newSize > _settingsMaxSize)
                    {
                        throw new HpackException("dynamic table size update to " + newSize +
                                                 " exceeds the advertised " + _settingsMaxSize);
                    }
                    _maxSize = (int)newSize;
                    Evict(0);
                }
                else
                {
                    // 0000xxxx literal without indexing, 0001xxxx literal never indexed: same decoding.
                    headers.Add(ReadLiteral(block, ref pos, end, 4));
                    fieldSeen = true;
                }
            }
            return headers;
        }

        private HeaderField ReadLiteral(byte[] block, ref int pos, int end, int prefixBits)
        {
            int nameIndex = (int)ReadInteger(block, ref pos, end, prefixBits);
            string name = nameIndex == 0 ? ReadString(block, ref pos, end) : Lookup(nameIndex).Name;
            string value = ReadString(block, ref pos, end);
            return new HeaderField(name, value);
        }

        private HeaderField Lookup(int index)
        {
            if (index <= HpackStaticTable.Count)
            {
                return new HeaderField(HpackStaticTable.Entries[index - 1, 0], HpackStaticTable.Entries[index - 1, 1]);
            }
            int dynamicIndex = index - HpackStaticTable.Count - 1;
            if (dynamicIndex >= _dynamic.Count)
            {
                throw new HpackException("header index " + index + " is beyond the dynamic table (" +
                                         _dynamic.Count + " entries)");
            }
            if (_indexStale)
            {
                _index.Clear();
                _index.AddRange(_dynamic);
                _indexStale = false;
            }
            return _index[dynamicIndex].Field;
        }

        private void Add(HeaderField field)
        {
            int size = Encoding.UTF8.GetByteCount(field.Name) + Encoding.UTF8.GetByteCount(field.Value) + 32;
            if (size > _maxSize)
            {
                // An entry larger than the table empties it and is not added (RFC 7541 section 4.4).
                Evict(_maxSize);
                return;
            }
            Evict(size);
            _dynamic.AddFirst(new Entry { Field = field, Size = size });
            _size += size;
            _indexStale = true;
        }

        /// <summary>Evicts oldest entries until <paramref name="room"/> more octets fit under the maximum size.</summary>
        private void Evict(int room)
        {
            while (_dynamic.Count > 0 && _size + room > _maxSize)
            {
                _size -= _dynamic.Last.Value.Size;
                _dynamic.RemoveLast();
                _indexStale = true;
            }
        }

        /// <summary>Reads an HPACK integer with an N-bit prefix (RFC 7541 section 5.1).</summary>
        public static long ReadInteger(byte[] data, ref int pos, int end, int prefixBits)
        {
            if (pos >= end)
            {
                throw new HpackException("truncated integer");
            }
            int max = (1 << prefixBits) - 1;
            long value = data[pos++] & max;
            if (value < max)
            {
                return value;
            }
            int shift = 0;
            while (true)
            {
                if (pos >= end)
                {
                    throw new HpackException("truncated integer");
                }
                byte b = data[pos++];
                value += (long)(b & 0x7F) << shift;
                if (value > int.MaxValue)
                {
                    throw new HpackException("integer overflows 31 bits");
                }
                if ((b & 0x80) == 0)
                {
                    return value;
                }
                shift += 7;
            }
        }

        private static string ReadString(byte[] data, ref int pos, int end)
        {
            if (pos >= end)
            {
                throw new HpackException("truncated string");
            }
            bool huffman = (data[pos] & 0x80) != 0;
            long length = ReadInteger(data, ref pos, end, 7);
            if (length > end - pos)
            {
                throw new HpackException("string length " + length + " runs past the header block");
            }
            int len = (int)length;
            string text = huffman
                ? Encoding.UTF8.GetString(Huffman.Decode(data, pos, len))
                : Encoding.UTF8.GetString(data, pos, len);
            pos += len;
            return text;
        }
    }
}
