using System;
using System.Collections.Generic;
using System.IO;
using System.Net.Sockets;
using System.Threading;

namespace NpcVoice.Net
{
    /// <summary>The reader thread of <see cref="Http2Connection"/>: frame dispatch, acks and flow control.</summary>
    public sealed partial class Http2Connection
    {
        // A header block in progress (HEADERS then CONTINUATION frames, nothing else in between).
        private int _blockStreamId;
        private bool _blockEndStream;
        private MemoryStream _block;

        private void ReadLoop()
        {
            try
            {
                bool first = true;
                while (true)
                {
                    Http2Frame frame = Http2Frame.Read(_net, Http2.DefaultMaxFrameSize);
                    if (frame == null)
                    {
                        Fail(StatusCode.Unavailable, "server closed the connection" + GoAwayNote());
                        return;
                    }
                    if (first && (frame.Type != Http2.Settings || frame.Has(Http2.FlagAck)))
                    {
                        throw new Http2ProtocolException(Http2.ProtocolError,
                            "server preface must start with SETTINGS, got frame type " + frame.Type);
                    }
                    first = false;
                    Handle(frame);
                }
            }
            catch (Http2ProtocolException e)
            {
                FailWithGoAway(e.ErrorCode, "HTTP/2 protocol error from " + Authority + ": " + e.Message);
            }
            catch (HpackException e)
            {
                FailWithGoAway(Http2.CompressionError, "HPACK error from " + Authority + ": " + e.Message);
            }
            catch (Exception e) when (e is IOException || e is ObjectDisposedException || e is SocketException)
            {
                Fail(StatusCode.Unavailable, "connection to " + Authority + " lost: " + e.Message + GoAwayNote());
            }
            catch (Exception e)
            {
                // A bug here must fail the calls, not kill the process (an unhandled thread exception would).
                FailWithGoAway(Http2.InternalError, "HTTP/2 reader failed: " + e);
            }
        }

        private string GoAwayNote()
        {
            lock (_state) { return _goAway ? " after GOAWAY" : ""; }
        }

        private void FailWithGoAway(uint errorCode, string detail)
        {
            try
            {
                lock (_writeLock)
                {
                    Write(Http2Frame.GoAwayFrame(0, errorCode, detail));
                }
            }
            catch (Exception)
            {
                // Best effort: the connection is being torn down anyway.
            }
            Fail(StatusCode.Internal, detail);
        }

        private void Handle(Http2Frame frame)
        {
            if (_block != null && (frame.Type != Http2.Continuation || frame.StreamId != _blockStreamId))
            {
                throw new Http2ProtocolException(Http2.ProtocolError, "header block interrupted by frame type " + frame.Type);
            }
            switch (frame.Type)
            {
                case Http2.Data: OnData(frame); break;
                case Http2.Headers:
                    RequireStream(frame);
                    _block = new MemoryStream();
                    _blockStreamId = frame.StreamId;
                    _blockEndStream = frame.Has(Http2.FlagEndStream);
                    AppendBlock(frame, frame.Content());
                    break;
                case Http2.Continuation:
                    if (_block == null)
                    {
                        throw new Http2ProtocolException(Http2.ProtocolError, "CONTINUATION without HEADERS");
                    }
                    AppendBlock(frame, new ArraySegment<byte>(frame.Payload));
                    break;
                case Http2.RstStream: OnRstStream(frame); break;
                case Http2.Settings: OnSettings(frame); break;
                case Http2.Ping:
                    if (frame.Payload.Length != 8 || frame.StreamId != 0)
                    {
                        throw new Http2ProtocolException(Http2.FrameSizeError, "PING must be 8 octets on stream 0");
                    }
                    if (!frame.Has(Http2.FlagAck))
                    {
                        WriteOrFail(new Http2Frame(Http2.Ping, Http2.FlagAck, 0, frame.Payload));
                    }
                    break;
                case Http2.GoAway: OnGoAway(frame); break;
                case Http2.WindowUpdate: OnWindowUpdate(frame); break;
                case Http2.PushPromise:
                    throw new Http2ProtocolException(Http2.ProtocolError, "PUSH_PROMISE although push is disabled");
                default:
                    break;  // PRIORITY and unknown frame types are ignored (RFC 9113 section 4.1).
            }
        }

        private static void RequireStream(Http2Frame frame)
        {
            if (frame.StreamId == 0)
            {
                throw new Http2ProtocolException(Http2.ProtocolError, "frame type " + frame.Type + " on stream 0");
            }
        }

        private void AppendBlock(Http2Frame frame, ArraySegment<byte> fragment)
        {
            _block.Write(fragment.Array, fragment.Offset, fragment.Count);
            if (!frame.Has(Http2.FlagEndHeaders))
            {
                return;
            }
            byte[] block = _block.ToArray();
            _block = null;
            // Always decode, even for a stream we abandoned: the dynamic table must stay in step with the server.
            List<HeaderField> headers = _decoder.Decode(block);
            Http2Stream stream;
            lock (_state)
            {
                if (_streams.TryGetValue(_blockStreamId, out stream) && _blockEndStream)
                {
                    RemoveStream(_blockStreamId);
                }
            }
            stream?.Listener.OnHeaders(headers, _blockEndStream);
        }

        private void OnData(Http2Frame frame)
        {
            RequireStream(frame);
            ArraySegment<byte> content = frame.Content();
            bool endStream = frame.Has(Http2.FlagEndStream);
            Http2Stream stream;
            lock (_state)
            {
                if (_streams.TryGetValue(frame.StreamId, out stream) && endStream)
                {
                    RemoveStream(frame.StreamId);
                }
            }
            stream?.Listener.OnData(content.Array, content.Offset, content.Count, endStream);
            // The listener has consumed the octets: give the window back, in batches of half a window.
            int connectionIncrement = 0;
            int streamIncrement = 0;
            lock (_state)
            {
                _connectionUnackedReceived += frame.Payload.Length;
                if (_connectionUnackedReceived >= _options.ConnectionWindowSize / 2)
                {
                    connectionIncrement = _connectionUnackedReceived;
                    _connectionUnackedReceived = 0;
                }
                if (stream != null && !endStream)
                {
                    stream.UnackedReceived += frame.Payload.Length;
                    if (stream.UnackedReceived >= _options.InitialWindowSize / 2)
                    {
                        streamIncrement = stream.UnackedReceived;
                        stream.UnackedReceived = 0;
                    }
                }
            }
            if (connectionIncrement > 0)
            {
                WriteOrFail(Http2Frame.WindowUpdateFrame(0, connectionIncrement));
            }
            if (streamIncrement > 0)
            {
                WriteOrFail(Http2Frame.WindowUpdateFrame(frame.StreamId, streamIncrement));
            }
        }

        private void OnRstStream(Http2Frame frame)
        {
            RequireStream(frame);
            if (frame.Payload.Length != 4)
            {
                throw new Http2ProtocolException(Http2.FrameSizeError, "RST_STREAM must be 4 octets");
            }
            uint code = Http2Frame.ReadUInt32(frame.Payload, 0);
            Http2Stream stream;
            lock (_state)
            {
                if (_streams.TryGetValue(frame.StreamId, out stream))
                {
                    RemoveStream(frame.StreamId);
                }
                Monitor.PulseAll(_state);
            }
            stream?.Listener.OnReset(GrpcWire.FromHttp2Error(code),
                "stream reset by the server (HTTP/2 error 0x" + code.ToString("x") + ")");
        }

        private void OnSettings(Http2Frame frame)
        {
            if (frame.StreamId != 0)
            {
                throw new Http2ProtocolException(Http2.ProtocolError, "SETTINGS on a stream");
            }
            if (frame.Has(Http2.FlagAck))
            {
                return;
            }
            if (frame.Payload.Length % 6 != 0)
            {
                throw new Http2ProtocolException(Http2.FrameSizeError, "SETTINGS length " + frame.Payload.Length);
            }
            lock (_state)
            {
                for (int i = 0; i < frame.Payload.Length; i += 6)
                {
                    int id = (frame.Payload[i] << 8) | frame.Payload[i + 1];
                    uint value = Http2Frame.ReadUInt32(frame.Payload, i + 2);
                    if (id == Http2.SettingsInitialWindowSize)
                    {
                        if (value > int.MaxValue)
                        {
                            throw new Http2ProtocolException(Http2.FlowControlError, "initial window " + value);
                        }
                        // A new initial window shifts every open stream's send window by the difference.
                        int delta = (int)value - _peerInitialWindow;
                        _peerInitialWindow = (int)value;
                        foreach (Http2Stream stream in _streams.Values)
                        {
                            stream.SendWindow += delta;
                        }
                    }
                    else if (id == Http2.SettingsMaxConcurrentStreams)
                    {
                        _peerMaxStreams = (int)Math.Min(value, int.MaxValue);
                    }
                    else if (id == Http2.SettingsMaxFrameSize)
                    {
                        if (value < Http2.DefaultMaxFrameSize || value > 16777215)
                        {
                            throw new Http2ProtocolException(Http2.ProtocolError, "max frame size " + value);
                        }
                        _peerMaxFrameSize = (int)value;
                    }
                }
                Monitor.PulseAll(_state);
            }
            WriteOrFail(new Http2Frame(Http2.Settings, Http2.FlagAck, 0, null));
            _peerSettings.Set();
        }

        private void OnGoAway(Http2Frame frame)
        {
            if (frame.Payload.Length < 8)
            {
                throw new Http2ProtocolException(Http2.FrameSizeError, "GOAWAY shorter than 8 octets");
            }
            int lastStreamId = (int)(Http2Frame.ReadUInt32(frame.Payload, 0) & 0x7FFFFFFF);
            uint code = Http2Frame.ReadUInt32(frame.Payload, 4);
            string debug = System.Text.Encoding.UTF8.GetString(frame.Payload, 8, frame.Payload.Length - 8);
            var refused = new List<Http2Stream>();
            lock (_state)
            {
                _goAway = true;
                _closeReason = "server sent GOAWAY (error 0x" + code.ToString("x") + (debug.Length > 0 ? ", " + debug : "") + ")";
                foreach (Http2Stream stream in _streams.Values)
                {
                    if (stream.Id > lastStreamId)
                    {
                        refused.Add(stream);
                    }
                }
                foreach (Http2Stream stream in refused)
                {
                    RemoveStream(stream.Id);
                }
            }
            // Streams the server never processed are safe to retry on a new connection.
            foreach (Http2Stream stream in refused)
            {
                stream.Listener.OnReset(StatusCode.Unavailable, CloseReason + "; stream was not processed");
            }
        }

        private void OnWindowUpdate(Http2Frame frame)
        {
            if (frame.Payload.Length != 4)
            {
                throw new Http2ProtocolException(Http2.FrameSizeError, "WINDOW_UPDATE must be 4 octets");
            }
            int increment = (int)(Http2Frame.ReadUInt32(frame.Payload, 0) & 0x7FFFFFFF);
            if (increment == 0 && frame.StreamId == 0)
            {
                throw new Http2ProtocolException(Http2.ProtocolError, "WINDOW_UPDATE with increment 0");
            }
            lock (_state)
            {
                Http2Stream stream;
                if (frame.StreamId == 0)
                {
                    _connectionSendWindow += increment;
                }
                else if (_streams.TryGetValue(frame.StreamId, out stream))
                {
                    stream.SendWindow += increment;
                }
                Monitor.PulseAll(_state);
            }
        }
    }
}
