using System;
using System.Collections.Generic;
using System.Linq;
using System.Threading;
using NpcVoice.Audio;
using NpcVoice.V1;
using NUnit.Framework;

namespace NpcVoice.Tests
{
    /// <summary>
    /// Against a running daemon at $NPC_VOICE_ADDR (host:port). Ignored (loudly, by run_tests.sh) without it.
    /// Every wait is bounded: a hang is a failure, not a stuck suite.
    /// </summary>
    [TestFixture]
    public class LiveTests
    {
        private const string Line = "Halt! Who goes there? State your business at the gate.";
        private const string LongLine = "Welcome, traveller. The road north is closed since the bridge fell, " +
            "so you will have to take the mountain pass. Bring warm clothes and plenty of food. " +
            "The wolves are hungry this winter, and the old watchtower has no guards left. " +
            "If you reach the monastery, tell the abbot that the smith sent you.";
        private static readonly TimeSpan Bounded = TimeSpan.FromSeconds(90);

        private string _address;
        private NpcVoiceClient _client;
        private string _character;

        [SetUp]
        public void SetUp()
        {
            _address = Environment.GetEnvironmentVariable("NPC_VOICE_ADDR");
            if (string.IsNullOrEmpty(_address))
            {
                Assert.Ignore("NPC_VOICE_ADDR is not set: live tests skipped");
            }
            _client = new NpcVoiceClient(_address, new NpcVoiceClientOptions { StreamDeadline = Bounded });
            // A fresh instance of the default character per test, so tests do not share voice state.
            string name = _client.ListCharacters().DefaultCharacter;
            Assert.IsNotEmpty(name, "daemon reports no default character");
            _character = name + "/" + new Random().Next(1000000, 9999999);
        }

        [TearDown]
        public void TearDown() => _client?.Dispose();

        private sealed class Collected
        {
            public StreamStart Start;
            public StreamEnd End;
            public readonly List<Mark> Marks = new List<Mark>();
            public long PcmBytes;
            public long ExpectedOffset;  // samples so far: each chunk must start where the last one ended
            public readonly List<string> Problems = new List<string>();
            public int BytesPerSample = 2;
            public bool SawCancelledEnd => End != null && End.Reason == EndReason.Cancelled;

            public void Add(SpeakResponse e)
            {
                if (e.Start != null)
                {
                    Start = e.Start;
                    BytesPerSample = e.Start.Format.Encoding == AudioEncoding.PcmF32Le ? 4 : 2;
                }
                else if (Start == null)
                {
                    Problems.Add("event before StreamStart");
                }
                if (e.Audio != null)
                {
                    if ((long)e.Audio.SampleOffset != ExpectedOffset)
                    {
                        Problems.Add("chunk at " + e.Audio.SampleOffset + ", expected " + ExpectedOffset);
                    }
                    PcmBytes += e.Audio.Pcm.Length;
                    ExpectedOffset += e.Audio.Pcm.Length / BytesPerSample;
                }
                if (e.Marks != null)
                {
                    Marks.AddRange(e.Marks.Phonemes.Concat(e.Marks.Visemes).Concat(e.Marks.Words));
                }
                if (e.End != null)
                {
                    End = e.End;
                }
            }
        }

        private Collected SpeakAndCollect(NpcVoiceClient client, SpeakRequest request)
        {
            var got = new Collected();
            SpeakCall call = client.Speak(request);
            foreach (SpeakResponse e in call.ReadAll())
            {
                got.Add(e);
            }
            return got;
        }

        [Test, Timeout(120000)]
        public void SpeakStreamsStartMarksAudioEndWithConsistentSampleCount()
        {
            Collected got = SpeakAndCollect(_client, new SpeakRequest { Character = _character, Text = Line, RequestId = "unity-1" });
            Assert.IsEmpty(got.Problems, string.Join("; ", got.Problems.ToArray()));
            Assert.IsNotNull(got.Start, "StreamStart");
            Assert.IsNotNull(got.End, "StreamEnd");
            Assert.AreNotEqual(0u, got.Start.Format.SampleRateHz, "StreamStart names the rate used");
            Assert.AreEqual("unity-1", got.Start.RequestId);
            Assert.AreEqual(EndReason.Completed, got.End.Reason);
            Assert.Greater(got.End.TotalSamples, (ulong)(got.Start.Format.SampleRateHz / 2), "at least half a second");
            Assert.AreEqual((long)got.End.TotalSamples * got.BytesPerSample, got.PcmBytes, "PCM bytes vs total_samples");
            Assert.IsNotEmpty(got.Marks, "marks");
            foreach (Mark m in got.Marks)
            {
                Assert.LessOrEqual(m.StartSample, m.EndSample, m.Label);
                Assert.LessOrEqual(m.EndSample, got.End.TotalSamples, m.Label + " ends after the audio");
            }
        }

        [Test, Timeout(120000)]
        public void TwoLinesRunConcurrentlyOnOneConnection()
        {
            var a = new Collected();
            var b = new Collected();
            var doneA = new ManualResetEvent(false);
            var doneB = new ManualResetEvent(false);
            RpcStatus statusA = default(RpcStatus), statusB = default(RpcStatus);
            SpeakCall callA = _client.Speak(new SpeakRequest { Character = _character, Text = Line }, a.Add,
                s => { statusA = s; doneA.Set(); });
            SpeakCall callB = _client.Speak(new SpeakRequest { Character = _character + "1", Text = "Move along, citizen." }, b.Add,
                s => { statusB = s; doneB.Set(); });
            Assert.IsTrue(doneA.WaitOne(Bounded) && doneB.WaitOne(Bounded), "both calls end");
            Assert.AreEqual(StatusCode.OK, statusA.Code, statusA.ToString());
            Assert.AreEqual(StatusCode.OK, statusB.Code, statusB.ToString());
            Assert.AreEqual(callA.ConnectionId, callB.ConnectionId, "one HTTP/2 connection");
            Assert.AreNotEqual(callA.StreamId, callB.StreamId);
            Assert.AreEqual((long)a.End.TotalSamples * a.BytesPerSample, a.PcmBytes);
            Assert.AreEqual((long)b.End.TotalSamples * b.BytesPerSample, b.PcmBytes);
        }

        [Test, Timeout(120000)]
        public void CancelMidLineEndsTheStreamAsCancelled()
        {
            var got = new Collected();
            var firstAudio = new ManualResetEvent(false);
            SpeakCall call = _client.Speak(new SpeakRequest { Character = _character, Text = LongLine },
                e => { got.Add(e); if (e.Audio != null) firstAudio.Set(); });
            Assert.IsTrue(firstAudio.WaitOne(Bounded), "first audio");
            CancelResponse cancel = _client.Cancel(new CancelRequest { Character = _character });
            Assert.IsTrue(call.Wait(Bounded), "the stream ends after Cancel");
            Assert.AreEqual(StatusCode.OK, call.Status.Code, call.Status.ToString());
            if (!cancel.Cancelled)
            {
                Assert.Inconclusive("the daemon finished the line before Cancel arrived");
            }
            Assert.IsTrue(got.SawCancelledEnd, "StreamEnd reason CANCELLED");
            Assert.AreEqual((long)got.End.TotalSamples * got.BytesPerSample, got.PcmBytes);
        }

        [Test, Timeout(120000)]
        public void ClientSideCancelResetsOnlyThatStream()
        {
            var firstAudio = new ManualResetEvent(false);
            SpeakCall call = _client.Speak(new SpeakRequest { Character = _character, Text = LongLine },
                e => { if (e.Audio != null) firstAudio.Set(); });
            Assert.IsTrue(firstAudio.WaitOne(Bounded), "first audio");
            int connection = call.ConnectionId;
            call.Cancel();
            Assert.AreEqual(StatusCode.Cancelled, call.Status.Code);
            Collected next = SpeakAndCollect(_client, new SpeakRequest { Character = _character, Text = "Next." });
            Assert.IsNotNull(next.End, "the connection still serves calls");
            Assert.AreEqual(connection, _client.ConnectionId);
        }

        [Test, Timeout(60000)]
        public void UnknownCharacterIsNotFoundNotAHang()
        {
            SpeakCall call = _client.Speak(new SpeakRequest { Character = "no-such-character-" + Guid.NewGuid().ToString("N"), Text = Line });
            var e = Assert.Throws<RpcException>(() => call.ReadAll().ToList());
            Assert.AreEqual(StatusCode.NotFound, e.Code, e.Status.ToString());
            Assert.IsNotEmpty(e.Status.Detail, "the daemon says why");
        }

        [Test, Timeout(120000)]
        public void LongLineStreamsThroughSmallFlowControlWindows()
        {
            // With RFC default windows (64 KiB), the stream stalls unless WINDOW_UPDATEs keep coming.
            var options = new NpcVoiceClientOptions { StreamDeadline = Bounded };
            options.Http2.InitialWindowSize = 65535;
            options.Http2.ConnectionWindowSize = 65535;
            using (var client = new NpcVoiceClient(_address, options))
            {
                var request = new SpeakRequest
                {
                    Character = _character, Text = Line,
                    Format = new AudioFormat { Encoding = AudioEncoding.PcmF32Le, SampleRateHz = 48000 },
                };
                Collected got = SpeakAndCollect(client, request);
                Assert.AreEqual(48000u, got.Start.Format.SampleRateHz);
                Assert.AreEqual(AudioEncoding.PcmF32Le, got.Start.Format.Encoding);
                Assert.Greater(got.PcmBytes, 4 * 65536, "several windows' worth of PCM");
                Assert.AreEqual((long)got.End.TotalSamples * 4, got.PcmBytes);
            }
        }

        [Test, Timeout(60000)]
        public void TinyDeadlineIsDeadlineExceeded()
        {
            SpeakCall call = _client.Speak(new SpeakRequest { Character = _character, Text = LongLine }, deadline: TimeSpan.FromMilliseconds(1));
            var e = Assert.Throws<RpcException>(() => call.ReadAll().ToList());
            Assert.AreEqual(StatusCode.DeadlineExceeded, e.Code, e.Status.ToString());
        }

        [Test, Timeout(120000)]
        public void DroppedConnectionIsReplacedOnTheNextCall()
        {
            _client.Connect();
            int before = _client.ConnectionId;
            _client.DropConnection();
            Collected got = SpeakAndCollect(_client, new SpeakRequest { Character = _character, Text = "Again." });
            Assert.IsNotNull(got.End);
            Assert.AreNotEqual(before, _client.ConnectionId);
        }

        [Test, Timeout(120000)]
        public void ConverseSpeaksTextSentInPieces()
        {
            var got = new Collected();
            var contexts = new HashSet<string>();
            ConverseCall call = _client.Converse(e => { lock (contexts) { contexts.Add(e.ContextId); } got.Add(e); });
            call.Send(ConverseRequest.Configure("npc", new ConverseConfig { Character = _character }));
            call.Send(ConverseRequest.AppendText("npc", "Well met, "));
            call.Send(ConverseRequest.AppendText("npc", "stranger. "));
            call.Send(ConverseRequest.Close("npc"));
            call.CompleteRequests();
            Assert.IsTrue(call.Wait(Bounded), "Converse ends after close");
            Assert.AreEqual(StatusCode.OK, call.Status.Code, call.Status.ToString());
            Assert.Greater(got.PcmBytes, 0);
            CollectionAssert.Contains(contexts, "npc");
        }

        [Test, Timeout(60000)]
        public void ListCharactersAndGetStatsDecode()
        {
            ListCharactersResponse characters = _client.ListCharacters();
            Assert.IsTrue(characters.Characters.Exists(c => c.Name == characters.DefaultCharacter),
                "the default character is listed");
            GetStatsResponse stats = _client.GetStats();
            Assert.Greater(stats.SlotsTotal, 0u);
            Assert.IsNotEmpty(stats.Device);
        }

        [Test, Timeout(120000)]
        public void PlaybackCorePlaysALiveLineResampled()
        {
            // 32 kHz is not a daemon rate: the line arrives at its own rate and is resampled here.
            var playback = new SpeechPlayback(32000, 30f);
            int line = playback.BeginLine();
            int sourceRate = 0;
            ulong total = 0;
            SpeakCall call = _client.Speak(new SpeakRequest { Character = _character, Text = Line }, e =>
            {
                if (e.Start != null) { sourceRate = (int)e.Start.Format.SampleRateHz; playback.SetFormat(line, sourceRate, e.Start.Format.Encoding); }
                if (e.Audio != null) playback.WriteAudio(line, e.Audio.Pcm);
                if (e.Marks != null) playback.AddMarks(line, e.Marks);
                if (e.End != null) { total = e.End.TotalSamples; playback.EndLine(line); }
            });
            Assert.IsTrue(call.Wait(Bounded));
            Assert.AreEqual(StatusCode.OK, call.Status.Code, call.Status.ToString());
            var buffer = new float[1024];
            var events = new List<PlaybackEvent>();
            for (int i = 0; i < 2000 && !events.Exists(e => e.Kind == PlaybackEventKind.LineFinished); i++)
            {
                playback.Read(buffer, 0, buffer.Length);
                playback.Pump();
                playback.DrainEvents(events);
            }
            long expected = (long)(total * 32000 + (ulong)sourceRate / 2) / sourceRate;
            Assert.AreEqual(expected, playback.PlayedSamples, "every sample played once, at the output rate");
            Assert.IsTrue(events.Exists(e => e.Kind == PlaybackEventKind.Word), "word marks raised");
            Assert.AreEqual(0, playback.Underruns);
        }
    }
}
