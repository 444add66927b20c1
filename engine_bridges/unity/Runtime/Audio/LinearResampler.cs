using System;
using System.Collections.Generic;

namespace NpcVoice.Audio
{
    /// <summary>
    /// Streaming linear-interpolation resampler. Output sample k sits at source position k * from / to, computed
    /// exactly in integers, so chunk boundaries leave no seams and long lines do not drift.
    /// </summary>
    public sealed class LinearResampler
    {
        public readonly int FromRate;
        public readonly int ToRate;
        private long _produced;  // output samples emitted so far (k)
        private long _consumed;  // source samples received so far
        private float _last;     // source sample _consumed - 1

        public LinearResampler(int fromRate, int toRate)
        {
            if (fromRate <= 0 || toRate <= 0)
            {
                throw new ArgumentException("sample rates must be positive, got " + fromRate + " -> " + toRate);
            }
            FromRate = fromRate;
            ToRate = toRate;
        }

        /// <summary>Output position of a source sample index (for marks on the same clock as the audio).</summary>
        public long ToOutputSamples(long sourceSamples) => (sourceSamples * ToRate + FromRate / 2) / FromRate;

        /// <summary>Resamples the next source samples, appending output to <paramref name="output"/>.</summary>
        public void Process(float[] input, int count, List<float> output)
        {
            if (FromRate == ToRate)
            {
                for (int i = 0; i < count; i++)
                {
                    output.Add(input[i]);
                }
                _consumed += count;
                _produced += count;
                return;
            }
            long available = _consumed + count;
            while (true)
            {
                long numerator = _produced * FromRate;
                long index = numerator / ToRate;
                if (index + 1 >= available)
                {
                    break;  // needs a sample that has not arrived yet
                }
                float frac = (float)(numerator % ToRate) / ToRate;
                float a = index < _consumed ? _last : input[index - _consumed];
                float b = input[index + 1 - _consumed];
                output.Add(a + (b - a) * frac);
                _produced++;
            }
            if (count > 0)
            {
                _last = input[count - 1];
            }
            _consumed = available;
        }

        /// <summary>End of the source: emits the outputs that fall on or after its last sample (holding it).</summary>
        public void Flush(List<float> output)
        {
            long target = ToOutputSamples(_consumed);
            while (_produced < target)
            {
                output.Add(_last);
                _produced++;
            }
        }
    }
}
