using System;
using System.Collections.Generic;
using System.IO;
using System.Text;
using NpcVoice.Net;
using NUnit.Framework;

namespace NpcVoice.Tests
{
    [TestFixture]
    public class HpackTests
    {
        [Test]
        public void SharedVectorsDecodeInSequenceWithOneDecoderPerCase()
        {
            string path = TestSupport.FindHpackVectors();
            if (path == null)
            {
                Assert.Ignore("engine_bridges/testdata/hpack_vectors.json not found (set NPC_VOICE_HPACK_VECTORS)");
            }
            var cases = (List<object>)MiniJson.Parse(File.ReadAllText(path));
            Assert.Greater(cases.Count, 5, "too few vectors in " + path);
            var failures = new List<string>();
            int blocksChecked = 0;
            foreach (Dictionary<string, object> c in cases)
            {
                string name = (string)c["name"];
                var blocks = (List<object>)c["blocks"];
                var expected = (List<object>)c["headers"];
                Assert.AreEqual(blocks.Count, expected.Count, name + ": blocks and headers differ in length");
                var decoder = new HpackDecoder(4096);
                for (int b = 0; b < blocks.Count; b++)
                {
                    string where = name + " block " + b;
                    try
                    {
                        List<HeaderField> got = decoder.Decode(TestSupport.Hex((string)blocks[b]));
                        var want = (List<object>)expected[b];
                        if (got.Count != want.Count)
                        {
                            failures.Add(where + ": " + got.Count + " fields, expected " + want.Count);
                            continue;
                        }
                        for (int i = 0; i < got.Count; i++)
                        {
                            var pair = (List<object>)want[i];
                            if (got[i].Name != (string)pair[0] || got[i].Value != (string)pair[1])
                            {
                                failures.Add(where + " field " + i + ": got '" + got[i] + "', expected '" + pair[0] + ": " + pair[1] + "'");
                            }
                        }
                        blocksChecked++;
                    }
                    catch (HpackException e)
                    {
                        failures.Add(where + ": " + e.Message);
                    }
                }
            }
            Assert.IsEmpty(failures, string.Join("\n", failures.ToArray()));
            Assert.Greater(blocksChecked, 10);
        }

        [Test]
        public void HuffmanRoundTripsEveryOctet()
        {
            var all = new byte[256];
            for (int i = 0; i < 256; i++)
            {
                all[i] = (byte)i;
            }
            byte[] encoded = Huffman.Encode(all);
            CollectionAssert.AreEqual(all, Huffman.Decode(encoded, 0, encoded.Length));
        }

        [Test]
        public void HuffmanMatchesRfcExample()
        {
            // RFC 7541 C.4.1: "www.example.com"
            byte[] coded = TestSupport.Hex("f1e3c2e5f23a6ba0ab90f4ff");
            Assert.AreEqual("www.example.com", Encoding.ASCII.GetString(Huffman.Decode(coded, 0, coded.Length)));
            Assert.AreEqual("f1e3c2e5f23a6ba0ab90f4ff", TestSupport.ToHex(Huffman.Encode(Encoding.ASCII.GetBytes("www.example.com"))));
        }

        [Test]
        public void HuffmanRejectsBadPaddingAndEos()
        {
            // 'a' is 00011 (5 bits); padding with zeros instead of ones is an error.
            Assert.Throws<HpackException>(() => Huffman.Decode(new byte[] { 0x18 }, 0, 1));
            // A full octet of ones after a complete symbol is more than 7 bits of padding.
            Assert.Throws<HpackException>(() => Huffman.Decode(new byte[] { 0x1f, 0xff }, 0, 2));
            // 30 bits of ones (EOS) inside the string.
            Assert.Throws<HpackException>(() => Huffman.Decode(new byte[] { 0xff, 0xff, 0xff, 0xfc }, 0, 4));
        }

        [Test]
        public void DecoderRejectsMalformedBlocks()
        {
            Assert.Throws<HpackException>(() => new HpackDecoder().Decode(new byte[] { 0x80 }), "index 0");
            Assert.Throws<HpackException>(() => new HpackDecoder().Decode(new byte[] { 0xbe }), "index 62 with an empty table");
            Assert.Throws<HpackException>(() => new HpackDecoder(4096).Decode(TestSupport.Hex("3fe21f")), "size update 4097 > 4096");
            Assert.Throws<HpackException>(() => new HpackDecoder().Decode(TestSupport.Hex("8820")), "size update after a field");
            Assert.Throws<HpackException>(() => new HpackDecoder().Decode(TestSupport.Hex("0f")), "truncated integer");
            Assert.Throws<HpackException>(() => new HpackDecoder().Decode(TestSupport.Hex("000561")), "string past the end");
            Assert.Throws<HpackException>(() => new HpackDecoder().Decode(TestSupport.Hex("ffffffffff0f")), "integer overflow");
        }

        [Test]
        public void DynamicTableEvictsOldestAndCountsOctets()
        {
            var decoder = new HpackDecoder(4096);
            // Size update to 70: room for one entry "a: b" (1 + 1 + 32 = 34) twice, not three times.
            var block = new MemoryStream();
            HpackEncoder.WriteInteger(block, 0x20, 5, 70);
            foreach (string v in new[] { "1", "2", "3" })
            {
                block.WriteByte(0x40);
                block.WriteByte(1);
                block.WriteByte((byte)'a');
                block.WriteByte(1);
                block.WriteByte((byte)v[0]);
            }
            decoder.Decode(block.ToArray());
            Assert.AreEqual(2, decoder.DynamicTableCount);
            Assert.AreEqual(68, decoder.DynamicTableSize);
            // Index 62 is the newest ("3"), 63 the one before; 64 was evicted.
            Assert.AreEqual("3", decoder.Decode(new byte[] { 0xbe })[0].Value);
            Assert.AreEqual("2", decoder.Decode(new byte[] { 0xbf })[0].Value);
            Assert.Throws<HpackException>(() => decoder.Decode(new byte[] { 0xc0 }));
        }

        [Test]
        public void EncoderOutputDecodesToTheSameHeaders()
        {
            var headers = new List<HeaderField>
            {
                new HeaderField(":method", "POST"),
                new HeaderField(":path", "/npc_voice.v1.NpcVoice/Speak"),
                new HeaderField("grpc-timeout", "5000m"),
                new HeaderField("x-long", new string('z', 300)),
            };
            var decoder = new HpackDecoder();
            List<HeaderField> decoded = decoder.Decode(HpackEncoder.Encode(headers));
            Assert.AreEqual(headers.Count, decoded.Count);
            for (int i = 0; i < headers.Count; i++)
            {
                Assert.AreEqual(headers[i].ToString(), decoded[i].ToString());
            }
            Assert.AreEqual(0, decoder.DynamicTableCount, "literals without indexing must not touch the table");
        }
    }
}
