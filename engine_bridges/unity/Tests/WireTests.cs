using System;
using System.Collections.Generic;
using System.IO;
using NpcVoice.Net;
using NpcVoice.V1;
using NUnit.Framework;

namespace NpcVoice.Tests
{
    /// <summary>HTTP/2 frames, gRPC framing and status, protobuf encoding (expected bytes from Python protobuf).</summary>
    [TestFixture]
    public class WireTests
    {
        [Test]
        public void FrameRoundTripsThroughAStream()
        {
            var frame = new Http2Frame(Http2.Data, Http2.FlagEndStream, 0x7654321, new byte[] { 1, 2, 3 });
            byte[] bytes = frame.ToBytes();
            Assert.AreEqual("000003000107654321010203", TestSupport.ToHex(bytes));
            Http2Frame read = Http2Frame.Read(new MemoryStream(bytes), Http2.DefaultMaxFrameSize);
            Assert.AreEqual(Http2.Data, read.Type);
            Assert.AreEqual(0x7654321, read.StreamId);
            Assert.IsTrue(read.Has(Http2.FlagEndStream));
            CollectionAssert.AreEqual(new byte[] { 1, 2, 3 }, read.Payload);
            Assert.IsNull(Http2Frame.Read(new MemoryStream(new byte[0]), 16384), "clean EOF");
            Assert.Throws<EndOfStreamException>(() => Http2Frame.Read(new MemoryStream(TestSupport.Hex("00000300")), 16384));
        }

        [Test]
        public void OversizedFrameIsAFrameSizeError()
        {
            var e = Assert.Throws<Http2ProtocolException>(() =>
                Http2Frame.Read(new MemoryStream(TestSupport.Hex("004001000000000001")), 16384));
            Assert.AreEqual(Http2.FrameSizeError, e.ErrorCode);
        }

        [Test]
        public void PaddingAndPriorityAreStripped()
        {
            // HEADERS, PADDED|PRIORITY: pad length 2, 5 octets of priority, block "88", 2 octets of padding.
            var frame = new Http2Frame(Http2.Headers, Http2.FlagPadded | Http2.FlagPriority | Http2.FlagEndHeaders, 1,
                TestSupport.Hex("02" + "800000010f" + "88" + "0000"));
            ArraySegment<byte> content = frame.Content();
            Assert.AreEqual(1, content.Count);
            Assert.AreEqual(0x88, content.Array[content.Offset]);
            var bad = new Http2Frame(Http2.Data, Http2.FlagPadded, 1, TestSupport.Hex("05aa"));
            Assert.Throws<Http2ProtocolException>(() => bad.Content());
        }

        [Test]
        public void GrpcMessagesReassembleAcrossArbitrarySplits()
        {
            byte[] a = GrpcWire.Frame(new byte[] { 10, 11 });
            byte[] b = GrpcWire.Frame(new byte[0]);
            byte[] c = GrpcWire.Frame(new byte[300]);
            var all = new List<byte>();
            all.AddRange(a);
            all.AddRange(b);
            all.AddRange(c);
            byte[] stream = all.ToArray();
            for (int split = 0; split <= stream.Length; split += 3)
            {
                var reader = new GrpcMessageReader();
                var messages = reader.Push(stream, 0, split);
                messages.AddRange(reader.Push(stream, split, stream.Length - split));
                Assert.AreEqual(3, messages.Count, "split at " + split);
                CollectionAssert.AreEqual(new byte[] { 10, 11 }, messages[0]);
                Assert.AreEqual(0, messages[1].Length);
                Assert.AreEqual(300, messages[2].Length);
                Assert.IsFalse(reader.HasPartialMessage);
            }
        }

        [Test]
        public void CompressedOrHugeMessagesAreRejected()
        {
            var e = Assert.Throws<RpcException>(() => new GrpcMessageReader().Push(TestSupport.Hex("0100000000"), 0, 5));
            Assert.AreEqual(StatusCode.Internal, e.Code);
            e = Assert.Throws<RpcException>(() => new GrpcMessageReader(100).Push(TestSupport.Hex("0000000065"), 0, 5));
            Assert.AreEqual(StatusCode.ResourceExhausted, e.Code);
        }

        [Test]
        public void StatusComesFromTrailersOrTheHttpStatus()
        {
            var trailers = new List<HeaderField>
            {
                new HeaderField("grpc-status", "5"),
                new HeaderField("grpc-message", "unknown character %27bob%27 %E2%80%94 try guard"),
            };
            RpcStatus status = GrpcWire.StatusFromTrailers(trailers, null);
            Assert.AreEqual(StatusCode.NotFound, status.Code);
            Assert.AreEqual("unknown character 'bob' \u2014 try guard", status.Detail);
            var noStatus = new List<HeaderField> { new HeaderField(":status", "503") };
            Assert.AreEqual(StatusCode.Unavailable, GrpcWire.StatusFromTrailers(noStatus, noStatus).Code);
            Assert.AreEqual(StatusCode.Unknown,
                GrpcWire.StatusFromTrailers(new List<HeaderField> { new HeaderField("grpc-status", "x") }, null).Code);
            Assert.AreEqual("100%", GrpcWire.PercentDecode("100%"), "a stray percent stays");
        }

        [Test]
        public void TimeoutHeaderUsesAtMostEightDigits()
        {
            Assert.AreEqual("1500m", GrpcWire.FormatTimeout(TimeSpan.FromSeconds(1.5)));
            Assert.AreEqual("1m", GrpcWire.FormatTimeout(TimeSpan.Zero));
            Assert.AreEqual("100000S", GrpcWire.FormatTimeout(TimeSpan.FromSeconds(100000)));
        }

        [Test]
        public void RequestsEncodeLikeTheReferenceProtobuf()
        {
            var speak = new SpeakRequest
            {
                Character = "guard/42",
                Text = "Halt! Wer da? \u2014 \u00fcn\u00efcode",
                Format = new AudioFormat { Encoding = AudioEncoding.PcmF32Le, SampleRateHz = 48000 },
                RequestId = "r-1",
                Overrides = new VoiceOverrides { Speed = 1.25f, PitchSemitones = 0f },
            };
            Assert.AreEqual("0a0867756172642f3432121b48616c7421205765722064613f20e2809420c3bc6ec3af636f64651a0608021080f702" +
                            "2203722d312a0a0d0000a03f1500000000", TestSupport.ToHex(speak.ToBytes()));
            Assert.AreEqual("0a0263312001", TestSupport.ToHex(ConverseRequest.Flush("c1").ToBytes()));
            Assert.AreEqual("1a00", TestSupport.ToHex(ConverseRequest.AppendText("", "").ToBytes()));
            var config = new ConverseConfig { Character = "merchant", MaxBufferDelayMs = 250 };
            Assert.AreEqual("0a026332120d0a086d65726368616e7420fa01", TestSupport.ToHex(ConverseRequest.Configure("c2", config).ToBytes()));
            Assert.AreEqual("0a0567756172641203616263",
                TestSupport.ToHex(new CancelRequest { Character = "guard", RequestId = "abc" }.ToBytes()));
        }

        [Test]
        public void BusyPolicyAndInterruptedMatchTheReferenceProtobuf()
        {
            // testdata/proto_vectors.json: speak_request_busy, speak_request_minimal, speak_response_end_interrupted
            var busy = new SpeakRequest { Character = "guard/42", Text = "Hi.", BusyPolicy = BusyPolicy.Interrupt };
            Assert.AreEqual("0a0867756172642f3432120348692e3002", TestSupport.ToHex(busy.ToBytes()));
            Assert.AreEqual("120348692e", TestSupport.ToHex(new SpeakRequest { Text = "Hi." }.ToBytes()),
                "BusyPolicy.Unspecified (= Queue) is not written");
            Assert.AreEqual(3, (int)BusyPolicy.Reject);
            SpeakResponse end = SpeakResponse.Parse(TestSupport.Hex("2a0a080310e8072203722d32"));
            Assert.AreEqual(EndReason.Interrupted, end.End.Reason);
            Assert.AreEqual(1000ul, end.End.TotalSamples);
            Assert.AreEqual("r-2", end.End.RequestId);
        }

        [Test]
        public void ResponsesDecodeFromTheReferenceProtobuf()
        {
            SpeakResponse start = SpeakResponse.Parse(TestSupport.Hex("12170a06080110a2ac011201721a05677561726422036a6f65"));
            Assert.AreEqual(22050u, start.Start.Format.SampleRateHz);
            Assert.AreEqual(AudioEncoding.PcmS16Le, start.Start.Format.Encoding);
            Assert.AreEqual("guard", start.Start.Character);
            Assert.AreEqual("joe", start.Start.Voice);
            Assert.IsNull(start.Audio);

            SpeakResponse audio = SpeakResponse.Parse(TestSupport.Hex("1a0a0a040100ff7f10f0a204"));
            CollectionAssert.AreEqual(new byte[] { 1, 0, 255, 127 }, audio.Audio.Pcm);
            Assert.AreEqual(70000ul, audio.Audio.SampleOffset);

            SpeakResponse marks = SpeakResponse.Parse(TestSupport.Hex(
                "22230a060a016818b009120e0a02616110ac021880c0a8ca9a3a1a090a0448616c74188827"));
            Assert.AreEqual("h", marks.Marks.Phonemes[0].Label);
            Assert.AreEqual(1200ul, marks.Marks.Phonemes[0].EndSample);
            Assert.AreEqual(300ul, marks.Marks.Visemes[0].StartSample);
            Assert.AreEqual(2000000000000ul, marks.Marks.Visemes[0].EndSample, "64-bit sample counts");
            Assert.AreEqual("Halt", marks.Marks.Words[0].Label);

            SpeakResponse end = SpeakResponse.Parse(TestSupport.Hex(
                "0a036374782a2f080210c0c4071a2409000000000000f83f110000000000204540190000000000208c40210000000000e0a540220171"));
            Assert.AreEqual("ctx", end.ContextId);
            Assert.AreEqual(EndReason.Cancelled, end.End.Reason);
            Assert.AreEqual(123456ul, end.End.TotalSamples);
            Assert.AreEqual(42.25, end.End.Timings.FirstAudioMs);
            Assert.AreEqual(2800.0, end.End.Timings.AudioMs);
            Assert.AreEqual("q", end.End.RequestId);

            CancelResponse cancel = CancelResponse.Parse(TestSupport.Hex("080110ba22"));
            Assert.IsTrue(cancel.Cancelled);
            Assert.AreEqual(4410ul, cancel.SamplesProduced);
        }

        [Test]
        public void UnknownFieldsAreSkippedAndTruncationIsAnError()
        {
            // Field 9 varint, field 10 fixed64, field 11 bytes, field 12 fixed32, then context_id.
            SpeakResponse r = SpeakResponse.Parse(TestSupport.Hex("4801" + "510102030405060708" + "5a0161" + "6501020304" + "0a0178"));
            Assert.AreEqual("x", r.ContextId);
            Assert.Throws<InvalidDataException>(() => SpeakResponse.Parse(TestSupport.Hex("0a05616263")));
            Assert.Throws<InvalidDataException>(() => SpeakResponse.Parse(TestSupport.Hex("1a80")));
        }
    }
}
