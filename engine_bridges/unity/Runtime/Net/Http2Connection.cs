using System;
using System.Collections.Generic;
using System.IO;
using System.Net.Sockets;
using System.Threading;

namespace NpcVoice.Net
{
    /// <summary>Receives one stream's events on the connection's reader thread. Must not block.</summary>
    public interface IHttp2StreamListener
    {
        void OnHeaders(List<HeaderField> headers, bool endStream);

        void OnData(byte[] data, int offset, int count, bool endStream);

        /// <summary>The stream ended abnormally: RST_STREAM, GOAWAY, or the connection was lost.</summary>
        void OnReset(StatusCode code, string detail);
    }

    /// <summary>Connection settings. Defaults suit streaming audio: a 16 MiB receive window never stalls a line.</summary>
    public sealed class Http2Options
    {
        /// <summary>SETTINGS_INITIAL_WINDOW_SIZE we advertise: how much a stream may send before we replenish.</summary>
        public int InitialWindowSize = 16 << 20;

        /// <summary>The connection-level receive window (raised from 65,535 with a WINDOW_UPDATE on stream 0).</summary>
        public int ConnectionWindowSize = 16 << 20;

        /// <summary>SETTINGS_HEADER_TABLE_SIZE: the HPACK dynamic table the server may use toward us.</summary>
        public int HeaderTableSize = 4096;

        public TimeSpan ConnectTimeout = TimeSpan.FromSeconds(5);
        public TimeSpan WriteTimeout = TimeSpan.FromSeconds(10);
    }

    /// <summary>One stream of a connection, as seen by the connection (flow control and close state).</summary>
    public sealed class Http2Stream
    {
        public readonly int Id;
        internal readonly IHttp2StreamListener Listener;
        internal long SendWindow;
        internal int UnackedReceived;

        internal Http2Stream(int id, IHttp2StreamListener listener, long sendWindow)
        {
            Id = id;
            Listener = listener;
            SendWindow = sendWindow;
        }
    }

    /// <summary>
    /// An HTTP/2 client connection over cleartext TCP with prior knowledge (h2c). Thread-safe: any thread may start
    /// streams and send; one reader thread decodes frames, acks SETTINGS and PING, keeps flow control windows open,
    /// and calls each stream's listener. When the connection dies, every open stream gets OnReset(UNAVAILABLE).
    /// </summary>
    public sealed partial class Http2Connection : IDisposable
    {
        private static int _connectionCounter;

        /// <summary>A process-unique number, so callers (and tests) can tell connections apart.</summary>
        public readonly int Id = Interlocked.Increment(ref _connectionCounter);
        public readonly string Authority;

        private readonly TcpClient _tcp;
        private readonly Stream _net;
        private readonly Http2Options _options;
        private readonly HpackDecoder _decoder;
        private readonly object _writeLock = new object();
        private readonly object _state = new object();  // guards everything below; Monitor.Wait for send windows
        private readonly Dictionary<int, Http2Stream> _streams = new Dictionary<int, Http2Stream>();
        private readonly ManualResetEvent _peerSettings = new ManualResetEvent(false);
        private Thread _reader;
        private int _nextStreamId = 1;
        private long _connectionSendWindow = Http2.DefaultWindow;
        private int _peerInitialWindow = Http2.DefaultWindow;
        private int _peerMaxFrameSize = Http2.DefaultMaxFrameSize;
        private int _peerMaxStreams = int.MaxValue;  // SETTINGS_MAX_CONCURRENT_STREAMS
        private int _connectionUnackedReceived;
        private bool _closed;
        private bool _goAway;
        private string _closeReason = "";

        private Http2Connection(TcpClient tcp, string authority, Http2Options options)
        {
            _tcp = tcp;
            _net = tcp.GetStream();
            _net.WriteTimeout = (int)options.WriteTimeout.TotalMilliseconds;
            Authority = authority;
            _options = options;
            _decoder = new HpackDecoder(options.HeaderTableSize);
        }

        /// <summary>False once the connection failed, was closed, or the server sent GOAWAY: open a new one.</summary>
        public bool IsUsable
        {
            get { lock (_state) { return !_closed && !_goAway; } }
        }

        public int OpenStreams
        {
            get { lock (_state) { return _streams.Count; } }
        }

        public string CloseReason
        {
            get { lock (_state) { return _closeReason; } }
        }

        /// <summary>Opens a TCP connection, sends the preface and SETTINGS, and waits for the server's SETTINGS.</summary>
        /// <exception cref="RpcException">UNAVAILABLE when the server cannot be reached or does not speak HTTP/2.</exception>
        public static Http2Connection Connect(string host, int port, Http2Options options)
        {
            string authority = host + ":" + port;
            var tcp = new TcpClient { NoDelay = true };
            try
            {
                var connecting = tcp.ConnectAsync(host, port);
                if (!connecting.Wait(options.ConnectTimeout))
                {
                    throw Unavailable("connecting to " + authority + " timed out after " +
                                      options.ConnectTimeout.TotalSeconds + " s");
                }
            }
            catch (AggregateException e)
            {
                tcp.Close();
                throw Unavailable("cannot connect to " + authority + ": " + e.InnerException?.Message);
            }
            catch (RpcException)
            {
                tcp.Close();
                throw;
            }
            var connection = new Http2Connection(tcp, authority, options);
            try
            {
                connection.Start();
            }
            catch (Exception e) when (e is IOException || e is SocketException || e is ObjectDisposedException)
            {
                connection.Close();
                throw Unavailable("cannot start HTTP/2 with " + authority + ": " + e.Message);
            }
            if (!connection._peerSettings.WaitOne(options.ConnectTimeout) || !connection.IsUsable)
            {
                string why = connection.CloseReason;
                connection.Close();
                throw Unavailable("no HTTP/2 SETTINGS from " + authority + " (is it a gRPC server?) " + why);
            }
            return connection;
        }

        private static RpcException Unavailable(string detail) =>
            new RpcException(new RpcStatus(StatusCode.Unavailable, detail));

        /// <summary>Waits while the server's stream limit is reached (until the deadline).</summary>
        private void WaitForStreamSlot(DateTime deadlineUtc)
        {
            lock (_state)
            {
                while (_streams.Count >= _peerMaxStreams && !_closed && !_goAway)
                {
                    TimeSpan left = deadlineUtc - DateTime.UtcNow;
                    if (left <= TimeSpan.Zero)
                    {
                        throw new RpcException(new RpcStatus(StatusCode.DeadlineExceeded,
                            "waiting for one of the server's " + _peerMaxStreams + " concurrent streams"));
                    }
                    Monitor.Wait(_state, left < TimeSpan.FromSeconds(1) ? left : TimeSpan.FromSeconds(1));
                }
            }
        }

        /// <summary>Forgets a stream (caller holds _state) and wakes senders waiting for windows or stream slots.</summary>
        private bool RemoveStream(int id)
        {
            bool removed = _streams.Remove(id);
            if (removed)
            {
                Monitor.PulseAll(_state);
            }
            return removed;
        }

        private void Start()
        {
            var settings = Http2Frame.Settings(
                Http2.SettingsEnablePush, 0,
                Http2.SettingsHeaderTableSize, _options.HeaderTableSize,
                Http2.SettingsInitialWindowSize, _options.InitialWindowSize);
            lock (_writeLock)
            {
                _net.Write(Http2.Preface, 0, Http2.Preface.Length);
                Write(settings);
                if (_options.ConnectionWindowSize > Http2.DefaultWindow)
                {
                    Write(Http2Frame.WindowUpdateFrame(0, _options.ConnectionWindowSize - Http2.DefaultWindow));
                }
            }
            _reader = new Thread(ReadLoop) { IsBackground = true, Name = "npc-voice h2 " + Authority };
            _reader.Start();
        }

        /// <summary>
        /// Sends HEADERS (and CONTINUATION) for a new stream and registers its listener. When the server's
        /// SETTINGS_MAX_CONCURRENT_STREAMS are all open, waits for one to close (until the deadline).
        /// </summary>
        public Http2Stream StartStream(IList<HeaderField> headers, bool endStream, IHttp2StreamListener listener,
            DateTime deadlineUtc)
        {
            byte[] block = HpackEncoder.Encode(headers);
            while (true)
            {
                WaitForStreamSlot(deadlineUtc);
                // Stream ids must reach the wire in increasing order: allocate and write under the write lock.
                lock (_writeLock)
                {
                    Http2Stream stream;
                    int maxFrame;
                    lock (_state)
                    {
                        if (_nextStreamId > int.MaxValue - 2)
                        {
                            _goAway = true;  // stream ids are used up: new calls go to a new connection
                            _closeReason = "stream ids exhausted";
                        }
                        if (_closed || _goAway)
                        {
                            throw Unavailable("connection to " + Authority + " is closing: " + _closeReason);
                        }
                        if (_streams.Count >= _peerMaxStreams)
                        {
                            continue;  // another thread took the free slot: wait again
                        }
                        stream = new Http2Stream(_nextStreamId, listener, _peerInitialWindow);
                        _nextStreamId += 2;
                        _streams[stream.Id] = stream;
                        maxFrame = _peerMaxFrameSize;
                    }
                    int offset = 0;
                    do
                    {
                        int n = Math.Min(maxFrame, block.Length - offset);
                        var chunk = new byte[n];
                        Buffer.BlockCopy(block, offset, chunk, 0, n);
                        bool last = offset + n == block.Length;
                        byte flags = (byte)((last ? Http2.FlagEndHeaders : 0) | (offset == 0 && endStream ? Http2.FlagEndStream : 0));
                        WriteOrFail(new Http2Frame(offset == 0 ? Http2.Headers : Http2.Continuation, flags, stream.Id, chunk));
                        offset += n;
                    } while (offset < block.Length);
                    return stream;
                }
            }
        }

        /// <summary>Sends DATA within the peer's flow-control windows, waiting for WINDOW_UPDATEs until the deadline.</summary>
        public void SendData(Http2Stream stream, byte[] data, bool endStream, DateTime deadlineUtc)
        {
            int offset = 0;
            do
            {
                int n;
                lock (_state)
                {
                    while (true)
                    {
                        if (_closed || !_streams.ContainsKey(stream.Id))
                        {
                            return;  // the listener has been (or is being) told why
                        }
                        long window = Math.Min(_connectionSendWindow, stream.SendWindow);
                        n = (int)Math.Min(Math.Min(window, _peerMaxFrameSize), data.Length - offset);
                        if (n > 0 || data.Length == offset)
                        {
                            break;
                        }
                        if (Thread.CurrentThread == _reader)
                        {
                            throw new InvalidOperationException("send window exhausted inside a reader callback");
                        }
                        TimeSpan left = deadlineUtc - DateTime.UtcNow;
                        if (left <= TimeSpan.Zero)
                        {
                            throw new RpcException(new RpcStatus(StatusCode.DeadlineExceeded, "waiting for the send window"));
                        }
                        Monitor.Wait(_state, left < TimeSpan.FromSeconds(1) ? left : TimeSpan.FromSeconds(1));
                    }
                    _connectionSendWindow -= n;
                    stream.SendWindow -= n;
                }
                var chunk = new byte[n];
                Buffer.BlockCopy(data, offset, chunk, 0, n);
                offset += n;
                bool last = offset == data.Length;
                WriteOrFail(new Http2Frame(Http2.Data, (byte)(last && endStream ? Http2.FlagEndStream : 0), stream.Id, chunk));
            } while (offset < data.Length);
        }

        /// <summary>Abandons a stream: RST_STREAM to the server, no further listener calls.</summary>
        public void ResetStream(Http2Stream stream, uint errorCode)
        {
            bool open;
            lock (_state)
            {
                open = RemoveStream(stream.Id) && !_closed;
            }
            if (open)
            {
                WriteOrFail(Http2Frame.RstStreamFrame(stream.Id, errorCode));
            }
        }

        /// <summary>Closes the connection (GOAWAY, then the socket); open streams get OnReset(UNAVAILABLE).</summary>
        public void Close()
        {
            try
            {
                lock (_writeLock)
                {
                    Write(Http2Frame.GoAwayFrame(0, Http2.NoError, "client closing"));
                }
            }
            catch (Exception)
            {
                // The socket may already be gone; closing is all that is left to do.
            }
            Fail(StatusCode.Unavailable, "connection closed by the client");
        }

        public void Dispose() => Close();

        private void Write(Http2Frame frame)
        {
            byte[] bytes = frame.ToBytes();
            _net.Write(bytes, 0, bytes.Length);
        }

        private void WriteOrFail(Http2Frame frame)
        {
            try
            {
                lock (_writeLock)
                {
                    Write(frame);
                }
            }
            catch (Exception e) when (e is IOException || e is ObjectDisposedException || e is SocketException)
            {
                Fail(StatusCode.Unavailable, "write to " + Authority + " failed: " + e.Message);
            }
        }

        /// <summary>Marks the connection dead, closes the socket and tells every open stream why.</summary>
        private void Fail(StatusCode code, string detail)
        {
            List<Http2Stream> open;
            lock (_state)
            {
                if (_closed)
                {
                    return;
                }
                _closed = true;
                _closeReason = detail;
                open = new List<Http2Stream>(_streams.Values);
                _streams.Clear();
                Monitor.PulseAll(_state);
            }
            _peerSettings.Set();
            try
            {
                _tcp.Close();
            }
            catch (Exception)
            {
                // Already closed.
            }
            foreach (Http2Stream stream in open)
            {
                stream.Listener.OnReset(code, detail);
            }
        }
    }
}
