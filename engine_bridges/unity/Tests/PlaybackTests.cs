using System;
using System.Collections.Generic;
using System.Linq;
using NpcVoice.Audio;
using NpcVoice.V1;
using NUnit.Framework;

namespace NpcVoice.Tests
{
    /// <summary>The UnityEngine-free core of NpcVoiceSource: ring buffer, resampler, underrun, fade, mark clock.</summary>
    [TestFixture]
    public class PlaybackTests
    {
        private static byte[] S16(params float[] samples)
        {
            var bytes = new byte[samples.Length * 2];
            for (int i = 0; i < samples.Length; i++)
            {
                short s = (short)Math.Round(samples[i] * 32767);
                bytes[2 * i] = (byte)s;
                bytes[2 * i + 1] = (byte)(s >> 8);
            }
            return bytes;
        }

        private static byte[] Constant(float value, int count)
        {
            var samples = new float[count];
            for (int i = 0; i < count; i++)
            {
                samples[i] = value;
            }
            return S16(samples);
        }

        private static float[] Pull(SpeechPlayback playback, int count)
        {
            var output = new float[count];
            playback.Read(output, 0, count);
            return output;
        }

        [Test]
        public void RingBufferWrapsAndRefusesOverflow()
        {
            var ring = new PcmRingBuffer(5);
            Assert.AreEqual(8, ring.Capacity);
            var data = new float[] { 1, 2, 3, 4, 5, 6 };
            float sample;
            for (int round = 0; round < 5; round++)
            {
                Assert.AreEqual(6, ring.Write(data, 0, 6));
                Assert.AreEqual(2, ring.Write(data, 0, 6), "only the free space is written");
                for (int i = 0; i < 6; i++)
                {
                    Assert.IsTrue(ring.TryRead(out sample));
                    Assert.AreEqual(data[i], sample);
                }
                ring.SkipTo(ring.WritePosition);
                Assert.IsFalse(ring.TryRead(out sample));
            }
            Assert.AreEqual(40, ring.ReadPosition);
        }

        [Test, Timeout(60000)]
        public void RingBufferKeepsEverySampleInOrderAcrossThreads()
        {
            const int total = 300000;
            var ring = new PcmRingBuffer(1024);
            var writer = new System.Threading.Thread(() =>
            {
                var rng = new Random(1);
                var chunk = new float[700];
                for (int next = 0; next < total;)
                {
                    int n = Math.Min(total - next, rng.Next(1, chunk.Length));
                    for (int i = 0; i < n; i++)
                    {
                        chunk[i] = next + i;
                    }
                    int written = 0;
                    while (written < n)
                    {
                        var rest = new float[n - written];
                        Array.Copy(chunk, written, rest, 0, rest.Length);
                        written += ring.Write(rest, 0, rest.Length);  // spins while the ring is full
                    }
                    next += n;
                }
            });
            writer.Start();
            float expected = 0;
            while (expected < total)
            {
                float sample;
                if (ring.TryRead(out sample))
                {
                    if (sample != expected)
                    {
                        Assert.Fail("sample " + expected + " read as " + sample);
                    }
                    expected++;
                }
            }
            writer.Join();
            Assert.AreEqual(total, ring.ReadPosition);
        }

        [Test]
        public void ResamplerIsSeamlessAcrossChunksAndKeepsLength()
        {
            const int from = 22050, to = 48000, n = 22050;
            var source = new float[n];
            for (int i = 0; i < n; i++)
            {
                source[i] = (float)Math.Sin(2 * Math.PI * 440 * i / from);
            }
            var whole = new List<float>();
            var once = new LinearResampler(from, to);
            once.Process(source, n, whole);
            once.Flush(whole);
            var pieces = new List<float>();
            var chunked = new LinearResampler(from, to);
            var rng = new Random(7);
            for (int pos = 0; pos < n;)
            {
                int len = Math.Min(n - pos, rng.Next(1, 700));
                var chunk = new float[len];
                Array.Copy(source, pos, chunk, 0, len);
                chunked.Process(chunk, len, pieces);
                pos += len;
            }
            chunked.Flush(pieces);
            Assert.AreEqual(to, whole.Count, "one second in, one second out");
            CollectionAssert.AreEqual(whole, pieces);
            double maxError = 0;
            for (int k = 0; k < whole.Count - 3; k++)
            {
                maxError = Math.Max(maxError, Math.Abs(whole[k] - Math.Sin(2 * Math.PI * 440 * k / to)));
            }
            Assert.Less(maxError, 0.02, "linear interpolation of a 440 Hz sine at 22.05 kHz");
        }

        [Test]
        public void UnderrunGivesSilenceNotStaleSamples()
        {
            var playback = new SpeechPlayback(16000, 1f);
            int line = playback.BeginLine(16000, AudioEncoding.PcmS16Le);
            Assert.That(Pull(playback, 64), Is.All.EqualTo(0f), "before any audio");
            playback.WriteAudio(line, Constant(0.5f, 100));
            float[] got = Pull(playback, 400);
            Assert.AreEqual(0.5f, got[0], 1e-3);
            Assert.AreEqual(0.5f, got[99], 1e-3);
            Assert.Less(Math.Abs(got[160]), 1e-3, "the tail decays to silence");
            Assert.That(new ArraySegment<float>(got, 200, 200), Is.All.EqualTo(0f));
            Assert.AreEqual(1, playback.Underruns);
            Assert.AreEqual(100, playback.PlayedSamples, "silence does not advance the audio clock");
            playback.EndLine(line);
            Pull(playback, 10);
            Assert.AreEqual(1, playback.Underruns, "an ended line running out is no underrun");
        }

        [Test]
        public void MarksFireOnlyWhenTheirSampleHasPlayed()
        {
            var playback = new SpeechPlayback(48000, 1f);
            int line = playback.BeginLine(24000, AudioEncoding.PcmS16Le);  // resampled 2x
            var marks = new Marks();
            marks.Words.Add(new Mark { Label = "Halt", StartSample = 0, EndSample = 1200 });
            marks.Visemes.Add(new Mark { Label = "aa", StartSample = 1000, EndSample = 1500 });
            playback.AddMarks(line, marks);
            playback.WriteAudio(line, Constant(0.25f, 2400));
            playback.EndLine(line);
            var events = new List<PlaybackEvent>();
            Assert.AreEqual(0, playback.DrainEvents(events), "nothing has played yet");
            Pull(playback, 1);
            playback.DrainEvents(events);
            Assert.AreEqual(2, events.Count);
            Assert.AreEqual(PlaybackEventKind.LineStarted, events[0].Kind);
            Assert.AreEqual("Halt", events[1].Label);
            Assert.AreEqual(0.05f, events[1].Duration, 1e-6, "1200 samples at 24 kHz");
            events.Clear();
            Pull(playback, 1999);
            Assert.AreEqual(0, playback.DrainEvents(events), "viseme at output sample 2000 not reached");
            Pull(playback, 1);
            playback.DrainEvents(events);
            Assert.AreEqual("aa", events[0].Label);
            events.Clear();
            Pull(playback, 4799 - 2001);
            Assert.AreEqual(0, playback.DrainEvents(events), "last sample not yet played");
            Pull(playback, 1);
            playback.DrainEvents(events);
            Assert.AreEqual(PlaybackEventKind.LineFinished, events[0].Kind);
            Assert.IsFalse(events[0].Cancelled);
        }

        [Test]
        public void OutputLatencyDelaysEventsAndSilenceCountsTowardIt()
        {
            var playback = new SpeechPlayback(16000, 1f);
            int line = playback.BeginLine(16000, AudioEncoding.PcmS16Le);
            var marks = new Marks();
            marks.Words.Add(new Mark { Label = "late", StartSample = 50, EndSample = 100 });
            playback.AddMarks(line, marks);
            playback.WriteAudio(line, Constant(0.5f, 100));
            playback.EndLine(line);
            var events = new List<PlaybackEvent>();
            Pull(playback, 60);
            playback.DrainEvents(events, 32);
            Assert.IsFalse(events.Exists(e => e.Label == "late"), "taken at 51 but heard only 32 samples later");
            Pull(playback, 40);
            playback.DrainEvents(events, 32);
            Assert.IsTrue(events.Exists(e => e.Label == "late"));
            Assert.IsFalse(events.Exists(e => e.Kind == PlaybackEventKind.LineFinished), "the last sample is not heard yet");
            Pull(playback, 31);
            playback.DrainEvents(events, 32);
            Assert.IsFalse(events.Exists(e => e.Kind == PlaybackEventKind.LineFinished));
            Pull(playback, 1);
            playback.DrainEvents(events, 32);
            Assert.IsTrue(events.Exists(e => e.Kind == PlaybackEventKind.LineFinished), "32 samples of silence later");
        }

        [Test]
        public void ALineWithoutAudioFinishesAfterTheAudioBeforeIt()
        {
            var playback = new SpeechPlayback(16000, 1f);
            int first = playback.BeginLine(16000, AudioEncoding.PcmS16Le);
            int failed = playback.BeginLine();
            playback.WriteAudio(first, Constant(0.5f, 10));
            playback.EndLine(first);
            playback.EndLine(failed);
            var events = new List<PlaybackEvent>();
            Pull(playback, 9);
            playback.DrainEvents(events);
            Assert.IsFalse(events.Exists(e => e.Kind == PlaybackEventKind.LineFinished));
            Pull(playback, 1);
            playback.DrainEvents(events);
            Assert.AreEqual(new[] { first, failed }, events.Where(e => e.Kind == PlaybackEventKind.LineFinished).Select(e => e.LineId).ToArray());
            Assert.IsFalse(events.Exists(e => e.Kind == PlaybackEventKind.LineStarted && e.LineId == failed), "it never started");
        }

        [Test]
        public void LinesPlayInRequestOrderEvenIfAudioArrivesOutOfOrder()
        {
            var playback = new SpeechPlayback(16000, 1f);
            int first = playback.BeginLine();
            int second = playback.BeginLine();
            playback.SetFormat(second, 16000, AudioEncoding.PcmS16Le);
            playback.WriteAudio(second, Constant(-0.5f, 50));
            playback.EndLine(second);
            Assert.That(Pull(playback, 10), Is.All.EqualTo(0f), "the first line has not sent audio yet");
            playback.SetFormat(first, 16000, AudioEncoding.PcmS16Le);
            playback.WriteAudio(first, Constant(0.5f, 50));
            playback.EndLine(first);
            float[] got = Pull(playback, 100);
            Assert.AreEqual(0.5f, got[0], 1e-3);
            Assert.AreEqual(0.5f, got[49], 1e-3);
            Assert.AreEqual(-0.5f, got[50], 1e-3);
            Assert.AreEqual(-0.5f, got[99], 1e-3);
        }

        [Test]
        public void CancelFadesOutThenDropsTheRestAndLaterLinesPlay()
        {
            var playback = new SpeechPlayback(1000, 1f, 0.01f);  // 10-sample fade
            int line = playback.BeginLine(1000, AudioEncoding.PcmS16Le);
            playback.WriteAudio(line, Constant(0.8f, 500));
            Pull(playback, 100);
            playback.Cancel();
            playback.WriteAudio(line, Constant(0.8f, 500));  // late audio of the cancelled line is ignored
            float[] fade = Pull(playback, 30);
            for (int i = 1; i < 10; i++)
            {
                Assert.Less(fade[i], fade[i - 1], "fade is monotonic at " + i);
            }
            Assert.Less(fade[0], 0.8f + 1e-3);
            Assert.That(new ArraySegment<float>(fade, 12, 18), Is.All.EqualTo(0f), "then silence");
            var events = new List<PlaybackEvent>();
            playback.DrainEvents(events);
            Assert.IsTrue(events.Exists(e => e.Kind == PlaybackEventKind.LineFinished && e.Cancelled && e.LineId == line));
            int next = playback.BeginLine(1000, AudioEncoding.PcmS16Le);
            playback.WriteAudio(next, Constant(0.3f, 20));
            float[] after = Pull(playback, 20);
            Assert.AreEqual(0.3f, after[0], 1e-3, "a line begun after Cancel plays without fade");
            Assert.AreEqual(0.3f, after[19], 1e-3);
        }

        [Test]
        public void OddChunkBoundariesAndFloatAudioDecode()
        {
            var playback = new SpeechPlayback(16000, 1f);
            int line = playback.BeginLine(16000, AudioEncoding.PcmF32Le);
            byte[] pcm = new byte[12];
            Buffer.BlockCopy(new[] { 0.25f, -0.5f, 1f }, 0, pcm, 0, 12);
            playback.WriteAudio(line, new[] { pcm[0], pcm[1], pcm[2], pcm[3], pcm[4] });
            playback.WriteAudio(line, new ArraySegment<byte>(pcm, 5, 7).ToArray());
            float[] got = Pull(playback, 3);
            CollectionAssert.AreEqual(new[] { 0.25f, -0.5f, 1f }, got);
        }

        [Test]
        public void InterleavedOutputMultipliesTheCarrier()
        {
            var playback = new SpeechPlayback(16000, 1f);
            int line = playback.BeginLine(16000, AudioEncoding.PcmS16Le);
            playback.WriteAudio(line, S16(0.5f, -0.25f));
            var data = new[] { 1f, 0.5f, 1f, 0.5f };  // a stereo carrier panned left
            playback.ReadInterleaved(data, 2, true);
            Assert.AreEqual(0.5f, data[0], 1e-3);
            Assert.AreEqual(0.25f, data[1], 1e-3);
            Assert.AreEqual(-0.25f, data[2], 1e-3);
            Assert.AreEqual(-0.125f, data[3], 1e-3);
        }
    }
}
