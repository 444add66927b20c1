using System.Collections.Generic;
using System.IO;
using System.Text;

namespace NpcVoice.Net
{
    /// <summary>
    /// Minimal HPACK encoder: every field is a literal without indexing (RFC 7541 section 6.2.2), so it never
    /// touches the peer's dynamic table and needs no state. Pseudo-headers with a static-table name use its index.
    /// </summary>
    public static class HpackEncoder
    {
        public static byte[] Encode(IList<HeaderField> headers)
        {
            var output = new MemoryStream();
            foreach (HeaderField field in headers)
            {
                int nameIndex = StaticNameIndex(field.Name);
                WriteInteger(output, 0x00, 4, nameIndex);
                if (nameIndex == 0)
                {
                    WriteString(output, field.Name);
                }
                WriteString(output, field.Value);
            }
            return output.ToArray();
        }

        private static int StaticNameIndex(string name)
        {
            for (int i = 0; i < HpackStaticTable.Count; i++)
            {
                if (HpackStaticTable.Entries[i, 0] == name)
                {
                    return i + 1;
                }
            }
            return 0;
        }

        /// <summary>Writes an integer with an N-bit prefix; <paramref name="flags"/> fills the bits above it.</summary>
        public static void WriteInteger(Stream output, int flags, int prefixBits, long value)
        {
            int max = (1 << prefixBits) - 1;
            if (value < max)
            {
                output.WriteByte((byte)(flags | (int)value));
                return;
            }
            output.WriteByte((byte)(flags | max));
            value -= max;
            while (value >= 0x80)
            {
                output.WriteByte((byte)((value & 0x7F) | 0x80));
                value >>= 7;
            }
            output.WriteByte((byte)value);
        }

        private static void WriteString(Stream output, string text)
        {
            byte[] octets = Encoding.UTF8.GetBytes(text);
            WriteInteger(output, 0x00, 7, octets.Length);
            output.Write(octets, 0, octets.Length);
        }
    }
}
