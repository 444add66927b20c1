using System;
using System.IO;

namespace NpcVoice.Net
{
    /// <summary>HTTP/2 frame types, flags, settings and error codes (RFC 9113) used by the client.</summary>
    public static class Http2
    {
        public const byte Data = 0x0, Headers = 0x1, Priority = 0x2, RstStream = 0x3, Settings = 0x4,
            PushPromise = 0x5, Ping = 0x6, GoAway = 0x7, WindowUpdate = 0x8, Continuation = 0x9;

        public const byte FlagEndStream = 0x1, FlagAck = 0x1, FlagEndHeaders = 0x4, FlagPadded = 0x8,
            FlagPriority = 0x20;

        public const ushort SettingsHeaderTableSize = 0x1, SettingsEnablePush = 0x2,
            SettingsMaxConcurrentStreams = 0x3, SettingsInitialWindowSize = 0x4, SettingsMaxFrameSize = 0x5,
            SettingsMaxHeaderListSize = 0x6;

        public const uint NoError = 0x0, ProtocolError = 0x1, InternalError = 0x2, FlowControlError = 0x3,
            StreamClosed = 0x5, FrameSizeError = 0x6, RefusedStream = 0x7, Cancel = 0x8, CompressionError = 0x9,
            EnhanceYourCalm = 0xb, InadequateSecurity = 0xc;

        public const int DefaultWindow = 65535;
        public const int DefaultMaxFrameSize = 16384;

        /// <summary>The client connection preface (RFC 9113 section 3.4).</summary>
        public static readonly byte[] Preface =
            System.Text.Encoding.ASCII.GetBytes("PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n");
    }

    /// <summary>One HTTP/2 frame: a 9-octet header and its payload.</summary>
    public sealed class Http2Frame
    {
        public byte Type;
        public byte Flags;
        public int StreamId;
        public byte[] Payload;

        public Http2Frame(byte type, byte flags, int streamId, byte[] payload)
        {
            Type = type;
            Flags = flags;
            StreamId = streamId;
            Payload = payload ?? new byte[0];
        }

        public bool Has(byte flag) => (Flags & flag) != 0;

        /// <summary>Serializes header and payload into one buffer, so that one Write puts the frame on the wire.</summary>
        public byte[] ToBytes()
        {
            var bytes = new byte[9 + Payload.Length];
            bytes[0] = (byte)(Payload.Length >> 16);
            bytes[1] = (byte)(Payload.Length >> 8);
            bytes[2] = (byte)Payload.Length;
            bytes[3] = Type;
            bytes[4] = Flags;
            WriteUInt32(bytes, 5, (uint)StreamId & 0x7FFFFFFF);
            Buffer.BlockCopy(Payload, 0, bytes, 9, Payload.Length);
            return bytes;
        }

        /// <summary>Reads one frame; returns null on a clean end of stream before the first octet.</summary>
        public static Http2Frame Read(Stream input, int maxFrameSize)
        {
            var header = new byte[9];
            if (!ReadExactly(input, header, 9, allowEof: true))
            {
                return null;
            }
            int length = (header[0] << 16) | (header[1] << 8) | header[2];
            if (length > maxFrameSize)
            {
                throw new Http2ProtocolException(Http2.FrameSizeError,
                    "frame of " + length + " octets exceeds the maximum " + maxFrameSize);
            }
            var payload = new byte[length];
            ReadExactly(input, payload, length, allowEof: false);
            int streamId = (int)(ReadUInt32(header, 5) & 0x7FFFFFFF);
            return new Http2Frame(header[3], header[4], streamId, payload);
        }

        private static bool ReadExactly(Stream input, byte[] buffer, int count, bool allowEof)
        {
            int read = 0;
            while (read < count)
            {
                int n = input.Read(buffer, read, count - read);
                if (n <= 0)
                {
                    if (read == 0 && allowEof)
                    {
                        return false;
                    }
                    throw new EndOfStreamException("connection closed in the middle of a frame");
                }
                read += n;
            }
            return true;
        }

        public static uint ReadUInt32(byte[] data, int offset) =>
            ((uint)data[offset] << 24) | ((uint)data[offset + 1] << 16) | ((uint)data[offset + 2] << 8) | data[offset + 3];

        public static void WriteUInt32(byte[] data, int offset, uint value)
        {
            data[offset] = (byte)(value >> 24);
            data[offset + 1] = (byte)(value >> 16);
            data[offset + 2] = (byte)(value >> 8);
            data[offset + 3] = (byte)value;
        }

        /// <summary>Strips padding (and the priority block of HEADERS) from a DATA or HEADERS payload.</summary>
        public ArraySegment<byte> Content()
        {
            int start = 0;
            int end = Payload.Length;
            if (Has(Http2.FlagPadded))
            {
                if (Payload.Length < 1 || Payload[0] >= Payload.Length)
                {
                    throw new Http2ProtocolException(Http2.ProtocolError, "padding longer than the frame");
                }
                end -= Payload[0];
                start = 1;
            }
            if (Type == Http2.Headers && Has(Http2.FlagPriority))
            {
                start += 5;
            }
            if (start > end)
            {
                throw new Http2ProtocolException(Http2.ProtocolError, "frame too short for its flags");
            }
            return new ArraySegment<byte>(Payload, start, end - start);
        }

        public static Http2Frame Settings(params int[] idValuePairs)
        {
            var payload = new byte[idValuePairs.Length / 2 * 6];
            for (int i = 0; i < idValuePairs.Length / 2; i++)
            {
                payload[i * 6] = (byte)(idValuePairs[2 * i] >> 8);
                payload[i * 6 + 1] = (byte)idValuePairs[2 * i];
                WriteUInt32(payload, i * 6 + 2, (uint)idValuePairs[2 * i + 1]);
            }
            return new Http2Frame(Http2.Settings, 0, 0, payload);
        }

        public static Http2Frame WindowUpdateFrame(int streamId, int increment)
        {
            var payload = new byte[4];
            WriteUInt32(payload, 0, (uint)increment);
            return new Http2Frame(Http2.WindowUpdate, 0, streamId, payload);
        }

        public static Http2Frame RstStreamFrame(int streamId, uint errorCode)
        {
            var payload = new byte[4];
            WriteUInt32(payload, 0, errorCode);
            return new Http2Frame(Http2.RstStream, 0, streamId, payload);
        }

        public static Http2Frame GoAwayFrame(int lastStreamId, uint errorCode, string debug)
        {
            byte[] text = System.Text.Encoding.UTF8.GetBytes(debug ?? "");
            var payload = new byte[8 + text.Length];
            WriteUInt32(payload, 0, (uint)lastStreamId);
            WriteUInt32(payload, 4, errorCode);
            Buffer.BlockCopy(text, 0, payload, 8, text.Length);
            return new Http2Frame(Http2.GoAway, 0, 0, payload);
        }
    }

    /// <summary>The peer broke HTTP/2; the connection is closed with GOAWAY carrying <see cref="ErrorCode"/>.</summary>
    public sealed class Http2ProtocolException : Exception
    {
        public readonly uint ErrorCode;

        public Http2ProtocolException(uint errorCode, string message) : base(message)
        {
            ErrorCode = errorCode;
        }
    }
}
