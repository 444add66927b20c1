using System;
using System.Collections.Generic;
using System.Threading;
using NpcVoice.Net;

namespace NpcVoice
{
    /// <summary>
    /// One gRPC call on an HTTP/2 stream. Responses are delivered either to a callback (on the connection's reader
    /// thread: keep it short, never block) or, without a callback, queued for <see cref="ReadAll"/>. The call ends
    /// exactly once with a status: from the trailers, a Trailers-Only response, RST_STREAM, the deadline, a lost
    /// connection, or <see cref="Cancel"/>.
    /// </summary>
    public class GrpcCall<TResponse> : IHttp2StreamListener where TResponse : class
    {
        private readonly Func<byte[], TResponse> _parse;
        private readonly Action<TResponse> _onMessage;
        private readonly Action<RpcStatus> _onComplete;
        private readonly Queue<TResponse> _queue = new Queue<TResponse>();
        private readonly GrpcMessageReader _reader = new GrpcMessageReader();
        private readonly object _sync = new object();
        private readonly ManualResetEvent _completed = new ManualResetEvent(false);
        private Http2Connection _connection;
        private Http2Stream _stream;
        private Timer _deadlineTimer;
        private DateTime _deadlineUtc = DateTime.MaxValue;
        private List<HeaderField> _responseHeaders;
        private int _done;  // 0 while running; set once by Complete
        private RpcStatus _status;

        internal GrpcCall(Func<byte[], TResponse> parse, Action<TResponse> onMessage, Action<RpcStatus> onComplete)
        {
            _parse = parse;
            _onMessage = onMessage;
            _onComplete = onComplete;
        }

        public bool IsCompleted => Volatile.Read(ref _done) != 0;

        /// <summary>The final status; meaningful once <see cref="IsCompleted"/>.</summary>
        public RpcStatus Status
        {
            get { lock (_sync) { return _status; } }
        }

        /// <summary>Response headers (initial metadata), once they have arrived.</summary>
        public IList<HeaderField> ResponseHeaders
        {
            get { lock (_sync) { return _responseHeaders; } }
        }

        public int StreamId
        {
            get { lock (_sync) { return _stream?.Id ?? 0; } }
        }

        public int ConnectionId
        {
            get { lock (_sync) { return _connection?.Id ?? 0; } }
        }

        internal void Start(Http2Connection connection, List<HeaderField> headers, TimeSpan? deadline,
            byte[] firstMessage, bool endOfRequests)
        {
            lock (_sync)
            {
                if (deadline.HasValue && _deadlineTimer == null)
                {
                    _deadlineUtc = DateTime.UtcNow + deadline.Value;
                    _deadlineTimer = new Timer(_ => OnDeadline(), null, deadline.Value, Timeout.InfiniteTimeSpan);
                }
                if (deadline.HasValue)
                {
                    TimeSpan left = _deadlineUtc - DateTime.UtcNow;
                    headers.Add(new HeaderField("grpc-timeout", GrpcWire.FormatTimeout(left > TimeSpan.Zero ? left : TimeSpan.Zero)));
                }
                _connection = connection;
            }
            // Not under _sync: a failing connection reports to every stream's listener (this one's too) from
            // whichever thread hit the failure, and that listener takes _sync.
            Http2Stream stream = connection.StartStream(headers, firstMessage == null && endOfRequests, this, _deadlineUtc);
            lock (_sync)
            {
                _stream = stream;
            }
            if (IsCompleted)
            {
                connection.ResetStream(stream, Http2.Cancel);  // cancelled or timed out while the stream was opening
                return;
            }
            if (firstMessage != null)
            {
                SendRaw(firstMessage, endOfRequests);
            }
        }

        /// <summary>Ends the call with <paramref name="status"/> before it reached the server (e.g. no connection).</summary>
        internal void Fail(RpcStatus status) => Complete(status);

        /// <summary>Sends one serialized request message (client streaming); waits for flow-control credit.</summary>
        protected void SendRaw(byte[] message, bool endOfRequests)
        {
            Http2Stream stream;
            lock (_sync) { stream = _stream; }
            if (IsCompleted || stream == null)
            {
                return;
            }
            _connection.SendData(stream, message == null ? new byte[0] : GrpcWire.Frame(message), endOfRequests, _deadlineUtc);
        }

        /// <summary>Cancels the call: RST_STREAM(CANCEL) to the server, status CANCELLED here.</summary>
        public void Cancel() => Abort(new RpcStatus(StatusCode.Cancelled, "cancelled by the client"));

        /// <summary>Waits for the end of the call; false if it is still running after <paramref name="timeout"/>.</summary>
        public bool Wait(TimeSpan timeout) => _completed.WaitOne(timeout);

        /// <summary>
        /// Yields queued responses until the call ends (only for calls made without a message callback); throws
        /// <see cref="RpcException"/> if it ends with a status other than OK. Never outlives the call's deadline.
        /// </summary>
        public IEnumerable<TResponse> ReadAll()
        {
            if (_onMessage != null)
            {
                throw new InvalidOperationException("this call delivers responses to its callback; ReadAll needs none");
            }
            while (true)
            {
                TResponse next = null;
                lock (_sync)
                {
                    while (_queue.Count == 0 && !IsCompleted)
                    {
                        Monitor.Wait(_sync);
                    }
                    if (_queue.Count > 0)
                    {
                        next = _queue.Dequeue();
                    }
                }
                if (next == null)
                {
                    RpcStatus status = Status;
                    if (status.Code != StatusCode.OK)
                    {
                        throw new RpcException(status);
                    }
                    yield break;
                }
                yield return next;
            }
        }

        private void OnDeadline() => Abort(new RpcStatus(StatusCode.DeadlineExceeded, "deadline exceeded (client timer)"));

        private void Abort(RpcStatus status)
        {
            Http2Stream stream;
            lock (_sync) { stream = _stream; }
            if (Complete(status) && stream != null)
            {
                _connection.ResetStream(stream, Http2.Cancel);
            }
        }

        /// <summary>Sets the final status once; returns false if the call had already ended.</summary>
        private bool Complete(RpcStatus status)
        {
            if (Interlocked.CompareExchange(ref _done, 1, 0) != 0)
            {
                return false;
            }
            lock (_sync)
            {
                _status = status;
                _deadlineTimer?.Dispose();
                Monitor.PulseAll(_sync);
            }
            _completed.Set();
            try
            {
                _onComplete?.Invoke(status);
            }
            catch (Exception e)
            {
                // The callback runs on the network thread (or a timer): its exception must not end the connection.
                System.Diagnostics.Trace.TraceError("npc-voice: completion callback threw: " + e);
            }
            return true;
        }

        void IHttp2StreamListener.OnHeaders(List<HeaderField> headers, bool endStream)
        {
            bool first;
            lock (_sync)
            {
                first = _responseHeaders == null;
                if (first)
                {
                    _responseHeaders = headers;
                }
            }
            if (first)
            {
                string http = GrpcWire.Find(headers, ":status");
                if (http != "200")
                {
                    // Not a gRPC response (a proxy error page, or a wrong port): the HTTP status decides the code.
                    Abort(new RpcStatus(GrpcWire.FromHttpStatus(http), "HTTP status " + (http ?? "missing")));
                    return;
                }
                if (endStream)
                {
                    Complete(GrpcWire.StatusFromTrailers(headers, headers));  // Trailers-Only
                    return;
                }
                string contentType = GrpcWire.Find(headers, "content-type") ?? "";
                if (!contentType.StartsWith("application/grpc", StringComparison.Ordinal))
                {
                    Abort(new RpcStatus(StatusCode.Unknown, "response content-type '" + contentType + "' is not gRPC"));
                }
                return;
            }
            if (!endStream)
            {
                Abort(new RpcStatus(StatusCode.Internal, "trailers without END_STREAM"));
                return;
            }
            RpcStatus status = GrpcWire.StatusFromTrailers(headers, ResponseHeaders);
            if (status.Code == StatusCode.OK && _reader.HasPartialMessage)
            {
                status = new RpcStatus(StatusCode.Internal, "stream ended inside a gRPC message");
            }
            Complete(status);
        }

        void IHttp2StreamListener.OnData(byte[] data, int offset, int count, bool endStream)
        {
            if (IsCompleted)
            {
                return;
            }
            try
            {
                foreach (byte[] message in _reader.Push(data, offset, count))
                {
                    TResponse response = _parse(message);
                    if (_onMessage != null)
                    {
                        _onMessage(response);
                    }
                    else
                    {
                        lock (_sync)
                        {
                            _queue.Enqueue(response);
                            Monitor.PulseAll(_sync);
                        }
                    }
                }
            }
            catch (RpcException e)
            {
                Abort(e.Status);
            }
            catch (Exception e)
            {
                // A malformed message or a throwing callback ends this call, never the connection.
                Abort(new RpcStatus(StatusCode.Internal, "handling a response failed: " + e.GetType().Name + ": " + e.Message));
            }
            if (endStream)
            {
                Complete(new RpcStatus(StatusCode.Internal, "server ended the stream without trailers"));
            }
        }

        void IHttp2StreamListener.OnReset(StatusCode code, string detail) => Complete(new RpcStatus(code, detail));
    }
}
