using System;
using System.Collections.Generic;
using System.Threading;
using NpcVoice.V1;

namespace NpcVoice.Audio
{
    public enum PlaybackEventKind { LineStarted, Phoneme, Viseme, Word, LineFinished }

    /// <summary>Something that became audible: raised on the main thread once its first sample has played.</summary>
    public struct PlaybackEvent
    {
        public PlaybackEventKind Kind;
        public int LineId;
        public string Label;        // the mark's label; empty for line events
        public long Sample;         // output sample clock (see SpeechPlayback.PlayedSamples)
        public float Duration;      // seconds, for marks
        public bool Cancelled;      // LineFinished only: the line was cut short
    }

    /// <summary>
    /// The engine-independent core of a speaking component. Three threads use it:
    /// the network thread writes lines (BeginLine/WriteAudio/AddMarks/EndLine), the audio thread pulls samples
    /// (Read, lock-free, silence on underrun, fade-out after Cancel), and the main thread calls Pump and
    /// DrainEvents to get marks at the moment the audio clock reaches them. Lines play one after another at the
    /// output rate; audio arriving at another rate is resampled linearly.
    /// </summary>
    public sealed partial class SpeechPlayback
    {
        private sealed class Line
        {
            public int Id;
            public int SourceRate;
            public AudioEncoding Encoding;
            public LinearResampler Resampler;
            public readonly Queue<float[]> Pending = new Queue<float[]>();  // resampled, not yet in the ring
            public int PendingOffset;     // samples of Pending.Peek() already written
            public readonly List<PlaybackEvent> Marks = new List<PlaybackEvent>();  // Sample relative to line start
            public byte[] Carry = new byte[0];  // a sample split across chunks
            public long StartPosition = -1;     // ring position of the first sample, once the line is at the head
            public bool Ended;
        }

        /// <summary>The daemon's default rate, assumed when a line's StreamStart gave none.</summary>
        public const int DefaultSourceRate = 22050;

        public readonly int OutputRate;
        private readonly PcmRingBuffer _ring;
        private readonly int _fadeSamples;
        private readonly object _producer = new object();        // network + main thread; never the audio thread
        private readonly List<Line> _lines = new List<Line>();   // in play order; [0] is the one writing to the ring
        private readonly List<PlaybackEvent> _scheduled = new List<PlaybackEvent>();  // sorted by Sample
        private readonly List<PlaybackEvent> _immediate = new List<PlaybackEvent>();
        private int _nextLineId = 1;

        // Shared with the audio thread.
        private long _cancelUpTo;        // samples before this position belong to cancelled lines
        private volatile bool _lineOpen;  // a line is playing or expected: an empty ring is an underrun
        private long _underruns;
        private long _silentRun;         // samples of silence output since the last real one

        // Audio thread only.
        private long _fadingUpTo;
        private int _fadeRemaining;
        private float _lastOut;
        private bool _wasPlaying;

        /// <param name="outputRate">The engine's mixing rate (Unity: AudioSettings.outputSampleRate).</param>
        /// <param name="ringSeconds">Audio kept ready for the audio thread; the rest waits in per-line queues.</param>
        /// <param name="fadeSeconds">Fade-out length on Cancel (short enough to feel instant, long enough not to click).</param>
        public SpeechPlayback(int outputRate, float ringSeconds = 4f, float fadeSeconds = 0.02f)
        {
            if (outputRate <= 0)
            {
                throw new ArgumentException("output rate must be positive, got " + outputRate);
            }
            OutputRate = outputRate;
            _ring = new PcmRingBuffer((int)(outputRate * ringSeconds));
            _fadeSamples = Math.Max(1, (int)(outputRate * fadeSeconds));
        }

        /// <summary>Samples the audio thread has taken (skipped cancelled audio included): the audio clock.</summary>
        public long PlayedSamples => _ring.ReadPosition;

        /// <summary>Samples ready in the ring.</summary>
        public int BufferedSamples => _ring.Count;

        /// <summary>Audio callbacks that found the ring empty while a line was still expected.</summary>
        public long Underruns => Interlocked.Read(ref _underruns);

        /// <summary>True while any line is queued or playing.</summary>
        public bool IsSpeaking
        {
            get { lock (_producer) { return _lines.Count > 0 || _ring.Count > 0; } }
        }

        /// <summary>
        /// Reserves the next line in play order (call it when the request is made, so lines play in the order they
        /// were asked for). Its format may follow with <see cref="SetFormat"/> when the StreamStart arrives.
        /// </summary>
        public int BeginLine(int sourceRate = 0, AudioEncoding encoding = AudioEncoding.Unspecified)
        {
            lock (_producer)
            {
                var line = new Line { Id = _nextLineId++ };
                _lines.Add(line);
                if (sourceRate > 0)
                {
                    SetFormat(line, sourceRate, encoding);
                }
                _lineOpen = true;
                PumpLocked();
                return line.Id;
            }
        }

        /// <summary>Network thread: the format the daemon actually used (StreamStart.format).</summary>
        public void SetFormat(int lineId, int sourceRate, AudioEncoding encoding)
        {
            lock (_producer)
            {
                Line line = Find(lineId);
                if (line != null)
                {
                    SetFormat(line, sourceRate, encoding);
                }
            }
        }

        private void SetFormat(Line line, int sourceRate, AudioEncoding encoding)
        {
            if (line.Resampler != null)
            {
                return;  // audio already flows at the first format
            }
            line.SourceRate = sourceRate > 0 ? sourceRate : DefaultSourceRate;
            line.Encoding = encoding == AudioEncoding.Unspecified ? AudioEncoding.PcmS16Le : encoding;
            line.Resampler = new LinearResampler(line.SourceRate, OutputRate);
        }

        /// <summary>Network thread: PCM bytes of a line (dropped if the line was cancelled).</summary>
        public void WriteAudio(int lineId, byte[] pcm)
        {
            lock (_producer)
            {
                Line line = Find(lineId);
                if (line == null || line.Ended)
                {
                    return;
                }
                if (line.Resampler == null)
                {
                    SetFormat(line, DefaultSourceRate, AudioEncoding.PcmS16Le);
                }
                float[] samples = Decode(line, pcm);
                var resampled = new List<float>(samples.Length * OutputRate / line.SourceRate + 2);
                line.Resampler.Process(samples, samples.Length, resampled);
                if (resampled.Count > 0)
                {
                    line.Pending.Enqueue(resampled.ToArray());
                }
                PumpLocked();
            }
        }

        /// <summary>Network thread: marks of a line, in the line's source sample clock.</summary>
        public void AddMarks(int lineId, Marks marks)
        {
            lock (_producer)
            {
                Line line = Find(lineId);
                if (line == null)
                {
                    return;
                }
                if (line.Resampler == null)
                {
                    SetFormat(line, DefaultSourceRate, AudioEncoding.PcmS16Le);
                }
                AddMarks(line, marks.Phonemes, PlaybackEventKind.Phoneme);
                AddMarks(line, marks.Visemes, PlaybackEventKind.Viseme);
                AddMarks(line, marks.Words, PlaybackEventKind.Word);
                if (line.StartPosition >= 0)
                {
                    ScheduleMarks(line);
                }
            }
        }

        /// <summary>Network thread: the line's stream ended (completed, failed or cancelled by the daemon).</summary>
        public void EndLine(int lineId)
        {
            lock (_producer)
            {
                Line line = Find(lineId);
                if (line == null || line.Ended)
                {
                    return;
                }
                var tail = new List<float>();
                line.Resampler?.Flush(tail);
                if (tail.Count > 0)
                {
                    line.Pending.Enqueue(tail.ToArray());
                }
                line.Ended = true;
                PumpLocked();
            }
        }

        /// <summary>
        /// Main thread: fades out what is playing and drops every queued line. Audio that arrives later for those
        /// lines is ignored; lines begun after this call play normally.
        /// </summary>
        public void Cancel()
        {
            lock (_producer)
            {
                // Events already played stay due; the rest belonged to cancelled audio and are dropped, except
                // that every line still owed a LineFinished gets one now, marked cancelled.
                long played = PlayedSamples;
                foreach (PlaybackEvent e in _scheduled)
                {
                    if (e.Sample < played)
                    {
                        _immediate.Add(e);
                    }
                    else if (e.Kind == PlaybackEventKind.LineFinished)
                    {
                        PlaybackEvent cancelled = e;
                        cancelled.Cancelled = true;
                        _immediate.Add(cancelled);
                    }
                }
                _scheduled.Clear();
                foreach (Line line in _lines)
                {
                    _immediate.Add(new PlaybackEvent { Kind = PlaybackEventKind.LineFinished, LineId = line.Id, Sample = played, Cancelled = true });
                }
                _lines.Clear();
                _lineOpen = false;
                Interlocked.Exchange(ref _cancelUpTo, _ring.WritePosition);
            }
        }

        /// <summary>Main thread (every frame): moves queued audio into the ring as it frees up.</summary>
        public void Pump()
        {
            lock (_producer)
            {
                PumpLocked();
            }
        }

        private Line Find(int lineId)
        {
            foreach (Line line in _lines)
            {
                if (line.Id == lineId)
                {
                    return line;
                }
            }
            return null;
        }

        private void AddMarks(Line line, List<Mark> marks, PlaybackEventKind kind)
        {
            foreach (Mark mark in marks)
            {
                long start = line.Resampler.ToOutputSamples((long)mark.StartSample);
                long end = line.Resampler.ToOutputSamples((long)Math.Max(mark.EndSample, mark.StartSample));
                line.Marks.Add(new PlaybackEvent
                {
                    Kind = kind, LineId = line.Id, Label = mark.Label, Sample = start,
                    Duration = (float)(end - start) / OutputRate,
                });
            }
        }

        private float[] Decode(Line line, byte[] pcm)
        {
            int width = line.Encoding == AudioEncoding.PcmF32Le ? 4 : 2;
            byte[] bytes = pcm;
            if (line.Carry.Length > 0)
            {
                bytes = new byte[line.Carry.Length + pcm.Length];
                Buffer.BlockCopy(line.Carry, 0, bytes, 0, line.Carry.Length);
                Buffer.BlockCopy(pcm, 0, bytes, line.Carry.Length, pcm.Length);
            }
            int count = bytes.Length / width;
            line.Carry = new byte[bytes.Length - count * width];
            Buffer.BlockCopy(bytes, count * width, line.Carry, 0, line.Carry.Length);
            return PcmCodec.ToFloat(bytes, count, line.Encoding);
        }
    }
}
