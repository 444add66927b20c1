using System.Threading;

namespace NpcVoice.Audio
{
    /// <summary>
    /// Single-producer single-consumer ring of mono float samples. The consumer (the audio thread) never locks or
    /// allocates. Positions count samples since creation, so they double as a sample clock.
    /// </summary>
    public sealed class PcmRingBuffer
    {
        private readonly float[] _buffer;
        private readonly int _mask;
        private long _writePos;  // written by the producer only
        private long _readPos;   // written by the consumer only

        /// <param name="minCapacity">Rounded up to a power of two.</param>
        public PcmRingBuffer(int minCapacity)
        {
            int capacity = 1;
            while (capacity < minCapacity)
            {
                capacity <<= 1;
            }
            _buffer = new float[capacity];
            _mask = capacity - 1;
        }

        public int Capacity => _buffer.Length;

        /// <summary>Total samples ever written (the producer's clock).</summary>
        public long WritePosition => Volatile.Read(ref _writePos);

        /// <summary>Total samples ever consumed, including skipped ones (the consumer's clock).</summary>
        public long ReadPosition => Volatile.Read(ref _readPos);

        public int Count => (int)(WritePosition - ReadPosition);

        public int FreeSpace => _buffer.Length - Count;

        /// <summary>Producer: appends up to <paramref name="count"/> samples; returns how many fitted.</summary>
        public int Write(float[] source, int offset, int count)
        {
            long write = _writePos;
            int n = System.Math.Min(count, _buffer.Length - (int)(write - Volatile.Read(ref _readPos)));
            for (int i = 0; i < n; i++)
            {
                _buffer[(int)((write + i) & _mask)] = source[offset + i];
            }
            Volatile.Write(ref _writePos, write + n);  // publish the samples after they are stored
            return n;
        }

        /// <summary>Consumer: takes one sample; false when empty.</summary>
        public bool TryRead(out float sample)
        {
            long read = _readPos;
            if (read >= Volatile.Read(ref _writePos))
            {
                sample = 0f;
                return false;
            }
            sample = _buffer[(int)(read & _mask)];
            Volatile.Write(ref _readPos, read + 1);
            return true;
        }

        /// <summary>Consumer: drops samples up to <paramref name="position"/> (never past what was written).</summary>
        public void SkipTo(long position)
        {
            long target = System.Math.Min(position, Volatile.Read(ref _writePos));
            if (target > _readPos)
            {
                Volatile.Write(ref _readPos, target);
            }
        }
    }
}
