using System;
using System.Collections.Generic;
using System.Threading;
using NpcVoice.V1;

namespace NpcVoice.Audio
{
    /// <summary>The ring-facing half of <see cref="SpeechPlayback"/>: pumping, the audio callback, event release.</summary>
    public sealed partial class SpeechPlayback
    {
        /// <summary>Writes queued audio of the head line into the ring; advances to the next line at its end.</summary>
        private void PumpLocked()
        {
            while (_lines.Count > 0)
            {
                Line head = _lines[0];
                if (head.StartPosition < 0)
                {
                    head.StartPosition = _ring.WritePosition;
                    Schedule(new PlaybackEvent { Kind = PlaybackEventKind.LineStarted, LineId = head.Id, Sample = head.StartPosition });
                    ScheduleMarks(head);
                }
                while (head.Pending.Count > 0)
                {
                    float[] chunk = head.Pending.Peek();
                    head.PendingOffset += _ring.Write(chunk, head.PendingOffset, chunk.Length - head.PendingOffset);
                    if (head.PendingOffset < chunk.Length)
                    {
                        return;  // the ring is full; Pump continues later
                    }
                    head.Pending.Dequeue();
                    head.PendingOffset = 0;
                }
                if (!head.Ended)
                {
                    return;
                }
                // The whole line is in the ring: LineFinished fires once its last sample has played. A line without
                // audio (it failed, or was empty) never starts; it finishes once the audio before it has played.
                long end = _ring.WritePosition;
                if (end == head.StartPosition)
                {
                    _scheduled.RemoveAll(e => e.LineId == head.Id && e.Kind == PlaybackEventKind.LineStarted);
                }
                Schedule(new PlaybackEvent { Kind = PlaybackEventKind.LineFinished, LineId = head.Id, Sample = end - 1 });
                _lines.RemoveAt(0);
            }
            _lineOpen = false;
        }

        private void ScheduleMarks(Line line)
        {
            foreach (PlaybackEvent mark in line.Marks)
            {
                PlaybackEvent absolute = mark;
                absolute.Sample = line.StartPosition + mark.Sample;
                Schedule(absolute);
            }
            line.Marks.Clear();
        }

        /// <summary>Inserts in clock order, after events of the same sample (stable: arrival order breaks ties).</summary>
        private void Schedule(PlaybackEvent e)
        {
            int index = _scheduled.Count;
            while (index > 0 && _scheduled[index - 1].Sample > e.Sample)
            {
                index--;
            }
            _scheduled.Insert(index, e);
        }

        /// <summary>
        /// Main thread: appends the events whose first sample the audio thread has taken (and played out) (plus Cancel's
        /// LineFinished events) to <paramref name="into"/>, in clock order; returns how many.
        /// </summary>
        /// <param name="latencySamples">Output latency after the audio thread takes a sample (e.g. one DSP buffer):
        /// events wait this much longer, so they line up with what is heard.</param>
        public int DrainEvents(List<PlaybackEvent> into, int latencySamples = 0)
        {
            // Samples taken are heard latencySamples of output later; silence output since the last real sample
            // counts toward that wait (otherwise the end of a line would never be heard).
            long silentRun = Interlocked.Read(ref _silentRun);
            long played = PlayedSamples - Math.Max(0, latencySamples - silentRun);
            lock (_producer)
            {
                int before = into.Count;
                into.AddRange(_immediate);
                _immediate.Clear();
                int n = 0;
                while (n < _scheduled.Count && _scheduled[n].Sample < played)
                {
                    n++;
                }
                into.AddRange(_scheduled.GetRange(0, n));
                _scheduled.RemoveRange(0, n);
                return into.Count - before;
            }
        }

        /// <summary>
        /// Audio thread: fills <paramref name="count"/> mono samples. Never locks or allocates. An empty ring gives
        /// silence (the last sample decays over a few samples instead of jumping, so underruns do not click).
        /// </summary>
        public void Read(float[] output, int offset, int count)
        {
            for (int i = 0; i < count; i++)
            {
                output[offset + i] = NextSample();
            }
        }

        /// <summary>Audio thread: Unity's OnAudioFilterRead layout (interleaved). With <paramref name="multiply"/>,
        /// the incoming signal (e.g. a spatialized constant carrier) is multiplied by the speech.</summary>
        public void ReadInterleaved(float[] data, int channels, bool multiply)
        {
            for (int frame = 0; frame + channels <= data.Length; frame += channels)
            {
                float sample = NextSample();
                for (int c = 0; c < channels; c++)
                {
                    data[frame + c] = multiply ? data[frame + c] * sample : sample;
                }
            }
        }

        private float NextSample()
        {
            long cancelUpTo = Interlocked.Read(ref _cancelUpTo);
            if (cancelUpTo > _fadingUpTo)
            {
                _fadingUpTo = cancelUpTo;  // a new Cancel: fade what plays now, then skip the cancelled audio
                _fadeRemaining = _fadeSamples;
            }
            float sample;
            if (_ring.ReadPosition < _fadingUpTo)
            {
                if (_fadeRemaining > 0 && _ring.TryRead(out sample))
                {
                    sample *= (float)--_fadeRemaining / _fadeSamples;  // reaches exactly 0
                    Interlocked.Exchange(ref _silentRun, 0);
                    return _lastOut = sample;
                }
                _ring.SkipTo(_fadingUpTo);
            }
            if (_ring.TryRead(out sample))
            {
                _wasPlaying = true;
                if (_silentRun != 0)
                {
                    Interlocked.Exchange(ref _silentRun, 0);
                }
                return _lastOut = sample;
            }
            if (_silentRun < int.MaxValue)
            {
                Interlocked.Increment(ref _silentRun);
            }
            if (_wasPlaying && _lineOpen)
            {
                Interlocked.Increment(ref _underruns);  // a line ran dry mid-way (not the wait for its first audio)
            }
            _wasPlaying = false;
            _lastOut *= 0.9f;  // ~1 ms decay to silence at 48 kHz
            if (Math.Abs(_lastOut) < 1e-4f)
            {
                _lastOut = 0f;
            }
            return _lastOut;
        }
    }

    /// <summary>PCM byte decoding for the daemon's encodings (little endian).</summary>
    public static class PcmCodec
    {
        public static float[] ToFloat(byte[] bytes, int samples, AudioEncoding encoding)
        {
            var output = new float[samples];
            if (encoding == AudioEncoding.PcmF32Le)
            {
                if (BitConverter.IsLittleEndian)
                {
                    Buffer.BlockCopy(bytes, 0, output, 0, samples * 4);
                }
                else
                {
                    for (int i = 0; i < samples; i++)
                    {
                        var b = new[] { bytes[4 * i + 3], bytes[4 * i + 2], bytes[4 * i + 1], bytes[4 * i] };
                        output[i] = BitConverter.ToSingle(b, 0);
                    }
                }
                return output;
            }
            for (int i = 0; i < samples; i++)
            {
                output[i] = (short)(bytes[2 * i] | (bytes[2 * i + 1] << 8)) / 32768f;
            }
            return output;
        }
    }
}
