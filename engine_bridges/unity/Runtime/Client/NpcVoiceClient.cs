using System;
using System.Collections.Generic;
using System.Linq;
using NpcVoice.Net;
using NpcVoice.V1;

namespace NpcVoice
{
    /// <summary>Client settings. All optional.</summary>
    public sealed class NpcVoiceClientOptions
    {
        /// <summary>Sent as `authorization: Bearer &lt;token&gt;` when set (the daemon's --token).</summary>
        public string AuthToken;

        /// <summary>Deadline for streaming calls without their own (null = none). Bounds every wait.</summary>
        public TimeSpan? StreamDeadline = TimeSpan.FromMinutes(5);

        /// <summary>Deadline for unary calls (Cancel, ListCharacters, GetStats) without their own.</summary>
        public TimeSpan UnaryDeadline = TimeSpan.FromSeconds(10);

        /// <summary>TCP connect plus HTTP/2 handshake, window sizes, write timeout.</summary>
        public Http2Options Http2 = new Http2Options();
    }

    /// <summary>A Speak call: events arrive on the network thread (or via ReadAll when no callback was given).</summary>
    public sealed class SpeakCall : GrpcCall<SpeakResponse>
    {
        internal SpeakCall(Action<SpeakResponse> onEvent, Action<RpcStatus> onComplete)
            : base(SpeakResponse.Parse, onEvent, onComplete) { }
    }

    /// <summary>A Converse call: send text pieces as they are written; audio events stream back per context.</summary>
    public sealed class ConverseCall : GrpcCall<SpeakResponse>
    {
        private readonly object _sendLock = new object();  // one message at a time on the request stream

        internal ConverseCall(Action<SpeakResponse> onEvent, Action<RpcStatus> onComplete)
            : base(SpeakResponse.Parse, onEvent, onComplete) { }

        /// <summary>Sends one action (ConverseRequest.AppendText/Flush/Cancel/Close/Configure). Thread-safe.</summary>
        public void Send(ConverseRequest request)
        {
            lock (_sendLock)
            {
                SendRaw(request.ToBytes(), false);
            }
        }

        /// <summary>Half-closes the request stream: no more actions; responses continue until the daemon ends.</summary>
        public void CompleteRequests()
        {
            lock (_sendLock)
            {
                SendRaw(null, true);
            }
        }
    }

    /// <summary>
    /// Client for the npc_voice.v1.NpcVoice service over one shared HTTP/2 connection (h2c, prior knowledge).
    /// Every call about one character carries the header <c>x-npc-character</c> (<see cref="CharacterHeader"/>), so a
    /// proxy in front of several daemons can route all of a character's calls to the daemon holding its state.
    /// Thread-safe. Calls run concurrently as streams of one connection; a dead connection (or one the server
    /// sent GOAWAY on) is replaced on the next call. Failures surface as <see cref="RpcException"/> or as the
    /// status passed to a call's completion callback, never as a hang: every call has a deadline.
    /// </summary>
    public sealed class NpcVoiceClient : IDisposable
    {
        private const string Service = "/npc_voice.v1.NpcVoice/";

        /// <summary>Request metadata naming the call's character, for character-affine proxies (README "Operating it").</summary>
        public const string CharacterHeader = "x-npc-character";
        private readonly string _host;
        private readonly int _port;
        private readonly NpcVoiceClientOptions _options;
        private readonly object _lock = new object();
        private Http2Connection _connection;
        private bool _disposed;

        /// <param name="address">"host:port" of the daemon, e.g. "127.0.0.1:50051".</param>
        public NpcVoiceClient(string address, NpcVoiceClientOptions options = null)
        {
            int colon = address == null ? -1 : address.LastIndexOf(':');
            int port;
            if (colon <= 0 || !int.TryParse(address.Substring(colon + 1), out port) || port <= 0 || port > 65535)
            {
                throw new ArgumentException("address must be host:port, got '" + address + "'", nameof(address));
            }
            _host = address.Substring(0, colon).Trim('[', ']');
            _port = port;
            _options = options ?? new NpcVoiceClientOptions();
        }

        public string Address => _host + ":" + _port;

        /// <summary>Connects now (otherwise the first call does). Throws RpcException(UNAVAILABLE) on failure.</summary>
        public void Connect() => CurrentConnection();

        /// <summary>The id of the connection calls currently use (0 before the first connect).</summary>
        public int ConnectionId
        {
            get { lock (_lock) { return _connection?.Id ?? 0; } }
        }

        /// <summary>Closes the current connection as if the network had dropped it (for tests and app suspends).</summary>
        public void DropConnection()
        {
            Http2Connection old;
            lock (_lock)
            {
                old = _connection;
                _connection = null;
            }
            old?.Close();
        }

        /// <summary>
        /// Speaks one line. With <paramref name="onEvent"/> null, read events with call.ReadAll(). Returns once the
        /// request is sent (connecting first if needed, and waiting while the server's concurrent-stream limit is
        /// reached); failures end the call with a status rather than throwing.
        /// </summary>
        public SpeakCall Speak(SpeakRequest request, Action<SpeakResponse> onEvent = null,
            Action<RpcStatus> onComplete = null, TimeSpan? deadline = null)
        {
            var call = new SpeakCall(onEvent, onComplete);
            StartCall(call, "Speak", request.ToBytes(), true, deadline ?? _options.StreamDeadline, request.Character);
            return call;
        }

        /// <summary>Opens a Converse stream; send actions with call.Send(...), then call.CompleteRequests().</summary>
        public ConverseCall Converse(Action<SpeakResponse> onEvent = null, Action<RpcStatus> onComplete = null,
            TimeSpan? deadline = null) => Converse((string)null, onEvent, onComplete, deadline);

        /// <summary>
        /// Opens a Converse stream whose contexts all speak as <paramref name="character"/>: the call carries
        /// x-npc-character, so a character-affine proxy sends it to that character's daemon (one character per call).
        /// </summary>
        public ConverseCall Converse(string character, Action<SpeakResponse> onEvent = null,
            Action<RpcStatus> onComplete = null, TimeSpan? deadline = null)
        {
            var call = new ConverseCall(onEvent, onComplete);
            StartCall(call, "Converse", null, false, deadline ?? _options.StreamDeadline, character);
            return call;
        }

        /// <summary>Stops a character's current line on the daemon (its stream ends with END_REASON_CANCELLED).</summary>
        public CancelResponse Cancel(CancelRequest request, TimeSpan? deadline = null) =>
            Unary("Cancel", request, CancelResponse.Parse, deadline, request.Character);

        public ListCharactersResponse ListCharacters(TimeSpan? deadline = null) =>
            Unary("ListCharacters", new EmptyRequest(), ListCharactersResponse.Parse, deadline);

        public GetStatsResponse GetStats(TimeSpan? deadline = null) =>
            Unary("GetStats", new EmptyRequest(), GetStatsResponse.Parse, deadline);

        private T Unary<T>(string method, IProtoMessage request, Func<byte[], T> parse, TimeSpan? deadline,
            string character = null) where T : class
        {
            var call = new GrpcCall<T>(parse, null, null);
            StartCall(call, method, request.ToBytes(), true, deadline ?? _options.UnaryDeadline, character);
            List<T> responses = call.ReadAll().ToList();
            if (responses.Count != 1)
            {
                throw new RpcException(new RpcStatus(StatusCode.Internal,
                    method + " returned " + responses.Count + " messages instead of 1"));
            }
            return responses[0];
        }

        /// <summary>Starts a call; a failure to reach the daemon ends the call with its status (never throws).</summary>
        private void StartCall<T>(GrpcCall<T> call, string method, byte[] message, bool endOfRequests,
            TimeSpan? deadline, string character = null) where T : class
        {
            // One retry: the connection may have died between the check and the first write.
            for (int attempt = 0; ; attempt++)
            {
                try
                {
                    Http2Connection connection = CurrentConnection();
                    call.Start(connection, Headers(connection, method, character), deadline, message, endOfRequests);
                    return;
                }
                catch (RpcException e)
                {
                    if (e.Code != StatusCode.Unavailable || attempt > 0 || call.IsCompleted)
                    {
                        call.Fail(e.Status);
                        return;
                    }
                    // The stream never reached the server: safe to try again on a fresh connection.
                }
                catch (ObjectDisposedException)
                {
                    call.Fail(new RpcStatus(StatusCode.Cancelled, "the client was disposed"));
                    return;
                }
            }
        }

        private List<HeaderField> Headers(Http2Connection connection, string method, string character)
        {
            var headers = new List<HeaderField>
            {
                new HeaderField(":method", "POST"),
                new HeaderField(":scheme", "http"),
                new HeaderField(":path", Service + method),
                new HeaderField(":authority", connection.Authority),
                new HeaderField("content-type", "application/grpc"),
                new HeaderField("te", "trailers"),
                new HeaderField("user-agent", "npc-voice-unity/0.1"),
            };
            if (!string.IsNullOrEmpty(_options.AuthToken))
            {
                headers.Add(new HeaderField("authorization", "Bearer " + _options.AuthToken));
            }
            if (IsRoutable(character))
            {
                headers.Add(new HeaderField(CharacterHeader, character));
            }
            return headers;
        }

        /// <summary>
        /// A character id the header can carry: not empty (the default character is not routed: name it behind a
        /// proxy) and printable ASCII (the daemon rejects other ids anyway).
        /// </summary>
        internal static bool IsRoutable(string character)
        {
            if (string.IsNullOrEmpty(character))
            {
                return false;
            }
            foreach (char c in character)
            {
                if (c <= ' ' || c > '~')
                {
                    return false;
                }
            }
            return true;
        }

        private Http2Connection CurrentConnection()
        {
            lock (_lock)
            {
                if (_disposed)
                {
                    throw new ObjectDisposedException(nameof(NpcVoiceClient));
                }
                if (_connection == null || !_connection.IsUsable)
                {
                    // A GOAWAY'd connection keeps serving its open streams; the server closes it when they end.
                    if (_connection != null && _connection.OpenStreams == 0)
                    {
                        _connection.Close();
                    }
                    _connection = Http2Connection.Connect(_host, _port, _options.Http2);
                }
                return _connection;
            }
        }

        public void Dispose()
        {
            Http2Connection connection;
            lock (_lock)
            {
                _disposed = true;
                connection = _connection;
                _connection = null;
            }
            connection?.Close();
        }
    }
}
