using System;
using System.Collections.Generic;

namespace NpcVoice.Net
{
    /// <summary>HPACK Huffman decoding (RFC 7541 section 5.2) with a binary tree built once from the code table.</summary>
    public static class Huffman
    {
        // Tree nodes: Children[2 * node + bit] is a child node index (> 0), or -(symbol + 1) for a leaf,
        // or 0 when the path is not a code prefix (cannot happen for the complete HPACK code).
        private static readonly int[] Children = BuildTree();

        private static int[] BuildTree()
        {
            var children = new List<int> { 0, 0 };
            int nodes = 1;
            for (int symbol = 0; symbol < HuffmanTable.Codes.Length; symbol++)
            {
                uint code = HuffmanTable.Codes[symbol];
                int length = HuffmanTable.Lengths[symbol];
                int node = 0;
                for (int i = length - 1; i >= 0; i--)
                {
                    int bit = (int)((code >> i) & 1);
                    int slot = 2 * node + bit;
                    if (i == 0)
                    {
                        children[slot] = -(symbol + 1);
                        break;
                    }
                    if (children[slot] == 0)
                    {
                        children[slot] = nodes++;
                        children.Add(0);
                        children.Add(0);
                    }
                    node = children[slot];
                }
            }
            return children.ToArray();
        }

        /// <summary>Decodes <paramref name="count"/> Huffman-coded octets; throws HpackException on EOS or bad padding.</summary>
        public static byte[] Decode(byte[] data, int offset, int count)
        {
            var output = new List<byte>(count * 8 / 5 + 1);
            int node = 0;
            int bitsSinceSymbol = 0;   // padding is the bits after the last complete symbol
            bool paddingAllOnes = true;
            for (int i = offset; i < offset + count; i++)
            {
                byte octet = data[i];
                for (int shift = 7; shift >= 0; shift--)
                {
                    int bit = (octet >> shift) & 1;
                    int next = Children[2 * node + bit];
                    bitsSinceSymbol++;
                    paddingAllOnes &= bit == 1;
                    if (next < 0)
                    {
                        int symbol = -next - 1;
                        if (symbol == 256)
                        {
                            throw new HpackException("Huffman string contains the EOS symbol");
                        }
                        output.Add((byte)symbol);
                        node = 0;
                        bitsSinceSymbol = 0;
                        paddingAllOnes = true;
                    }
                    else if (next == 0)
                    {
                        throw new HpackException("invalid Huffman code");
                    }
                    else
                    {
                        node = next;
                    }
                }
            }
            if (bitsSinceSymbol > 7 || !paddingAllOnes)
            {
                throw new HpackException("Huffman padding is longer than 7 bits or not all ones (" + bitsSinceSymbol + " bits)");
            }
            return output.ToArray();
        }

        /// <summary>Huffman-encodes octets (used by tests and by callers that want compact literals).</summary>
        public static byte[] Encode(byte[] data)
        {
            var output = new List<byte>(data.Length);
            ulong buffer = 0;
            int bits = 0;
            foreach (byte b in data)
            {
                buffer = (buffer << HuffmanTable.Lengths[b]) | HuffmanTable.Codes[b];
                bits += HuffmanTable.Lengths[b];
                while (bits >= 8)
                {
                    bits -= 8;
                    output.Add((byte)(buffer >> bits));
                }
            }
            if (bits > 0)
            {
                // Pad with the most significant bits of EOS (all ones).
                output.Add((byte)((buffer << (8 - bits)) | (0xFFu >> bits)));
            }
            return output.ToArray();
        }
    }

    /// <summary>A header block violated HPACK (RFC 7541); the connection must be torn down (COMPRESSION_ERROR).</summary>
    public sealed class HpackException : Exception
    {
        public HpackException(string message) : base(message) { }
    }
}
