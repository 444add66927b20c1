using System;
using System.IO;
using System.Text;

namespace NpcVoice.V1
{
    /// <summary>Protobuf wire format writer (proto3): only what the npc_voice.v1 messages need.</summary>
    public sealed class ProtoWriter
    {
        private readonly MemoryStream _out = new MemoryStream();

        public byte[] ToArray() => _out.ToArray();

        public void Varint(ulong value)
        {
            while (value >= 0x80)
            {
                _out.WriteByte((byte)(value | 0x80));
                value >>= 7;
            }
            _out.WriteByte((byte)value);
        }

        private void Tag(int field, int wireType) => Varint((ulong)((field << 3) | wireType));

        /// <summary>proto3 scalars are omitted when zero, unless the field is `optional` or in a oneof.</summary>
        public void UInt64(int field, ulong value, bool always = false)
        {
            if (value != 0 || always)
            {
                Tag(field, 0);
                Varint(value);
            }
        }

        public void Bool(int field, bool value, bool always = false) => UInt64(field, value ? 1UL : 0UL, always);

        public void Float(int field, float value, bool always = false)
        {
            if (value != 0 || always)
            {
                Tag(field, 5);
                byte[] bytes = BitConverter.GetBytes(value);
                if (!BitConverter.IsLittleEndian)
                {
                    Array.Reverse(bytes);
                }
                _out.Write(bytes, 0, 4);
            }
        }

        public void Bytes(int field, byte[] value, bool always = false)
        {
            if (value != null && (value.Length > 0 || always))
            {
                Tag(field, 2);
                Varint((ulong)value.Length);
                _out.Write(value, 0, value.Length);
            }
        }

        public void String(int field, string value, bool always = false)
        {
            if (value != null && (value.Length > 0 || always))
            {
                Bytes(field, Encoding.UTF8.GetBytes(value), true);
            }
        }

        /// <summary>An embedded message; null means unset. An empty message that is set is still written.</summary>
        public void Message(int field, IProtoMessage message)
        {
            if (message != null)
            {
                Bytes(field, message.ToBytes(), true);
            }
        }
    }

    /// <summary>A message the client sends.</summary>
    public interface IProtoMessage
    {
        byte[] ToBytes();
    }

    /// <summary>Protobuf wire format reader: iterate fields with Next(), read the value by its type, skip the rest.</summary>
    public sealed class ProtoReader
    {
        private readonly byte[] _data;
        private int _pos;
        private readonly int _end;
        private int _wireType;

        public ProtoReader(byte[] data) : this(data, 0, data.Length) { }

        public ProtoReader(byte[] data, int offset, int count)
        {
            _data = data;
            _pos = offset;
            _end = offset + count;
        }

        /// <summary>Field number of the next field, or 0 at the end of the message.</summary>
        public int Next()
        {
            if (_pos >= _end)
            {
                return 0;
            }
            ulong tag = Varint();
            _wireType = (int)(tag & 7);
            int field = (int)(tag >> 3);
            if (field == 0)
            {
                throw new InvalidDataException("protobuf field number 0");
            }
            return field;
        }

        public ulong Varint()
        {
            ulong value = 0;
            for (int shift = 0; shift < 64; shift += 7)
            {
                if (_pos >= _end)
                {
                    throw new InvalidDataException("truncated protobuf varint");
                }
                byte b = _data[_pos++];
                value |= (ulong)(b & 0x7F) << shift;
                if ((b & 0x80) == 0)
                {
                    return value;
                }
            }
            throw new InvalidDataException("protobuf varint longer than 10 octets");
        }

        public ulong UInt64() => Varint();

        public uint UInt32() => (uint)Varint();

        public bool Bool() => Varint() != 0;

        public float Float()
        {
            Need(4);
            float value = BitConverter.ToSingle(LittleEndian(4), 0);
            return value;
        }

        public double Double()
        {
            Need(8);
            return BitConverter.ToDouble(LittleEndian(8), 0);
        }

        private byte[] LittleEndian(int n)
        {
            var bytes = new byte[n];
            Buffer.BlockCopy(_data, _pos, bytes, 0, n);
            _pos += n;
            if (!BitConverter.IsLittleEndian)
            {
                Array.Reverse(bytes);
            }
            return bytes;
        }

        public byte[] Bytes()
        {
            int length = Length();
            var bytes = new byte[length];
            Buffer.BlockCopy(_data, _pos, bytes, 0, length);
            _pos += length;
            return bytes;
        }

        public string String()
        {
            int length = Length();
            string text = Encoding.UTF8.GetString(_data, _pos, length);
            _pos += length;
            return text;
        }

        /// <summary>A reader over an embedded message (the current length-delimited field).</summary>
        public ProtoReader Message()
        {
            int length = Length();
            var reader = new ProtoReader(_data, _pos, length);
            _pos += length;
            return reader;
        }

        private int Length()
        {
            if (_wireType != 2)
            {
                throw new InvalidDataException("expected a length-delimited field, got wire type " + _wireType);
            }
            ulong length = Varint();
            if (length > (ulong)(_end - _pos))
            {
                throw new InvalidDataException("protobuf length " + length + " runs past the message");
            }
            return (int)length;
        }

        private void Need(int n)
        {
            if (_end - _pos < n)
            {
                throw new InvalidDataException("truncated protobuf fixed-width field");
            }
        }

        /// <summary>Skips the current field's value (for fields this client does not know).</summary>
        public void Skip()
        {
            switch (_wireType)
            {
                case 0: Varint(); break;
                case 1: Need(8); _pos += 8; break;
                case 2:
                    int length = Length();  // advances _pos past the length prefix first
                    _pos += length;
                    break;
                case 5: Need(4); _pos += 4; break;
                default: throw new InvalidDataException("unsupported protobuf wire type " + _wireType);
            }
        }
    }
}
