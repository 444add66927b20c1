using System;
using System.Collections.Generic;
using System.IO;
using System.Text;

namespace NpcVoice.Net
{
    /// <summary>gRPC-over-HTTP/2 details: message framing, status from headers, timeouts, percent-encoding.</summary>
    public static class GrpcWire
    {
        /// <summary>Prefixes a serialized message with the 5-octet gRPC header (uncompressed, big-endian length).</summary>
        public static byte[] Frame(byte[] message)
        {
            var framed = new byte[5 + message.Length];
            Http2Frame.WriteUInt32(framed, 1, (uint)message.Length);
            Buffer.BlockCopy(message, 0, framed, 5, message.Length);
            return framed;
        }

        /// <summary>The grpc-timeout header value: at most 8 digits and a unit (gRPC HTTP/2 protocol spec).</summary>
        public static string FormatTimeout(TimeSpan timeout)
        {
            long ms = Math.Max(1, (long)Math.Ceiling(timeout.TotalMilliseconds));
            if (ms < 100000000)
            {
                return ms + "m";
            }
            long seconds = Math.Min(99999999, (ms + 999) / 1000);
            return seconds + "S";
        }

        /// <summary>Decodes grpc-message: percent-encoded UTF-8; malformed escapes are kept as they are.</summary>
        public static string PercentDecode(string value)
        {
            if (value.IndexOf('%') < 0)
            {
                return value;
            }
            var bytes = new List<byte>(value.Length);
            for (int i = 0; i < value.Length; i++)
            {
                if (value[i] == '%' && i + 2 < value.Length && IsHex(value[i + 1]) && IsHex(value[i + 2]))
                {
                    bytes.Add(Convert.ToByte(value.Substring(i + 1, 2), 16));
                    i += 2;
                }
                else
                {
                    bytes.AddRange(Encoding.UTF8.GetBytes(value[i].ToString()));
                }
            }
            return Encoding.UTF8.GetString(bytes.ToArray());
        }

        private static bool IsHex(char c) => (c >= '0' && c <= '9') || (c >= 'a' && c <= 'f') || (c >= 'A' && c <= 'F');

        /// <summary>
        /// Status from trailers (or from a Trailers-Only response). Without grpc-status, the HTTP status maps to a
        /// gRPC code as the gRPC spec says (http-grpc-status-mapping.md).
        /// </summary>
        public static RpcStatus StatusFromTrailers(IList<HeaderField> trailers, IList<HeaderField> responseHeaders)
        {
            string grpcStatus = Find(trailers, "grpc-status");
            if (grpcStatus != null)
            {
                int code;
                if (!int.TryParse(grpcStatus, out code) || code < 0 || code > 16)
                {
                    return new RpcStatus(StatusCode.Unknown, "unparseable grpc-status '" + grpcStatus + "'");
                }
                string message = Find(trailers, "grpc-message");
                return new RpcStatus((StatusCode)code, message == null ? "" : PercentDecode(message));
            }
            string http = Find(trailers, ":status") ?? (responseHeaders == null ? null : Find(responseHeaders, ":status"));
            return new RpcStatus(FromHttpStatus(http), "no grpc-status in trailers (HTTP status " + (http ?? "none") + ")");
        }

        public static StatusCode FromHttpStatus(string httpStatus)
        {
            switch (httpStatus)
            {
                case "400": return StatusCode.Internal;
                case "401": return StatusCode.Unauthenticated;
                case "403": return StatusCode.PermissionDenied;
                case "404": return StatusCode.Unimplemented;
                case "429":
                case "502":
                case "503":
                case "504": return StatusCode.Unavailable;
                default: return StatusCode.Unknown;
            }
        }

        /// <summary>RST_STREAM error codes to gRPC codes (gRPC HTTP/2 protocol spec, "Errors").</summary>
        public static StatusCode FromHttp2Error(uint errorCode)
        {
            switch (errorCode)
            {
                case Http2.RefusedStream: return StatusCode.Unavailable;
                case Http2.Cancel: return StatusCode.Cancelled;
                case Http2.EnhanceYourCalm: return StatusCode.ResourceExhausted;
                case Http2.InadequateSecurity: return StatusCode.PermissionDenied;
                default: return StatusCode.Internal;
            }
        }

        public static string Find(IList<HeaderField> headers, string name)
        {
            if (headers == null)
            {
                return null;
            }
            foreach (HeaderField h in headers)
            {
                if (h.Name == name)
                {
                    return h.Value;
                }
            }
            return null;
        }
    }

    /// <summary>Reassembles gRPC length-prefixed messages from DATA payloads split at arbitrary points.</summary>
    public sealed class GrpcMessageReader
    {
        private readonly MemoryStream _pending = new MemoryStream();
        private readonly int _maxMessageSize;

        public GrpcMessageReader(int maxMessageSize = 64 << 20)
        {
            _maxMessageSize = maxMessageSize;
        }

        /// <summary>True when octets of an incomplete message are buffered.</summary>
        public bool HasPartialMessage => _pending.Length > 0;

        /// <summary>Appends octets and returns every message they complete, in order.</summary>
        public List<byte[]> Push(byte[] data, int offset, int count)
        {
            _pending.Write(data, offset, count);
            var messages = new List<byte[]>();
            byte[] buffer = _pending.GetBuffer();
            int length = (int)_pending.Length;
            int pos = 0;
            while (length - pos >= 5)
            {
                if (buffer[pos] != 0)
                {
                    throw new RpcException(new RpcStatus(StatusCode.Internal,
                        "compressed gRPC message (flag " + buffer[pos] + ") but no grpc-encoding was negotiated"));
                }
                uint size = Http2Frame.ReadUInt32(buffer, pos + 1);
                if (size > _maxMessageSize)
                {
                    throw new RpcException(new RpcStatus(StatusCode.ResourceExhausted,
                        "gRPC message of " + size + " octets exceeds the limit " + _maxMessageSize));
                }
                if (length - pos - 5 < size)
                {
                    break;
                }
                var message = new byte[size];
                Buffer.BlockCopy(buffer, pos + 5, message, 0, (int)size);
                messages.Add(message);
                pos += 5 + (int)size;
            }
            if (pos > 0)
            {
                byte[] rest = new byte[length - pos];
                Buffer.BlockCopy(buffer, pos, rest, 0, rest.Length);
                _pending.SetLength(0);
                _pending.Write(rest, 0, rest.Length);
            }
            return messages;
        }
    }
}
