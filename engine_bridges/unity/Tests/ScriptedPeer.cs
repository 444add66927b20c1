using System;
using System.Collections.Generic;
using System.IO;
using System.Net;
using System.Net.Sockets;
using System.Text;
using System.Threading;
using NpcVoice.Net;
using NUnit.Framework;

namespace NpcVoice.Tests
{
    /// <summary>
    /// A hand-driven HTTP/2 server on loopback for protocol tests: the test scripts exactly which frames it sends
    /// (Huffman headers, dynamic-table references, PING, RST_STREAM, GOAWAY, a dropped socket) and checks what the
    /// client sends back. The script runs on its own thread; its assertion failures surface in Join().
    /// </summary>
    internal sealed class ScriptedPeer : IDisposable
    {
        private readonly TcpListener _listener = new TcpListener(IPAddress.Loopback, 0);
        private TcpClient _socket;
        private Stream _stream;
        private Thread _thread;
        private Exception _failure;
        public readonly HpackDecoder Decoder = new HpackDecoder();

        public ScriptedPeer()
        {
            _listener.Start();
        }

        public int Port => ((IPEndPoint)_listener.LocalEndpoint).Port;

        public string Address => "127.0.0.1:" + Port;

        public void Run(Action<ScriptedPeer> script)
        {
            _thread = new Thread(() =>
            {
                try
                {
                    script(this);
                }
                catch (Exception e)
                {
                    _failure = e;
                }
            }) { IsBackground = true };
            _thread.Start();
        }

        public void Join()
        {
            Assert.IsTrue(_thread.Join(TimeSpan.FromSeconds(20)), "peer script did not finish");
            if (_failure != null)
            {
                throw new AssertionException("peer script failed: " + _failure);
            }
        }

        /// <summary>Accepts the next connection and reads the client preface.</summary>
        public void Accept()
        {
            var accepting = _listener.AcceptTcpClientAsync();
            if (!accepting.Wait(TimeSpan.FromSeconds(10)))
            {
                throw new TimeoutException("no client connected");
            }
            _socket = accepting.Result;
            _stream = _socket.GetStream();
            _stream.ReadTimeout = 10000;
            var preface = new byte[Http2.Preface.Length];
            for (int read = 0; read < preface.Length;)
            {
                int n = _stream.Read(preface, read, preface.Length - read);
                if (n <= 0) throw new EndOfStreamException("preface");
                read += n;
            }
            Assert.AreEqual(Encoding.ASCII.GetString(Http2.Preface), Encoding.ASCII.GetString(preface));
        }

        /// <summary>Accepts and exchanges SETTINGS; returns the client's first SETTINGS frame.</summary>
        public Http2Frame Handshake(params int[] settings)
        {
            Accept();
            Send(Http2Frame.Settings(settings));
            return Expect(Http2.Settings);
        }

        public void Send(Http2Frame frame)
        {
            byte[] bytes = frame.ToBytes();
            _stream.Write(bytes, 0, bytes.Length);
        }

        public void SendRaw(byte[] bytes) => _stream.Write(bytes, 0, bytes.Length);

        public Http2Frame Read() => Http2Frame.Read(_stream, 1 << 20);

        /// <summary>The first frame of <paramref name="type"/>, from frames skipped earlier or read now.</summary>
        public Http2Frame Expect(byte type, Func<Http2Frame, bool> also = null)
        {
            int earlier = Seen.FindIndex(f => f.Type == type && (also == null || also(f)));
            if (earlier >= 0)
            {
                Http2Frame frame = Seen[earlier];
                Seen.RemoveAt(earlier);
                return frame;
            }
            while (true)
            {
                Http2Frame frame = Read();
                if (frame == null) throw new EndOfStreamException("client closed while waiting for frame type " + type);
                if (frame.Type == type && (also == null || also(frame))) return frame;
                Seen.Add(frame);
            }
        }

        /// <summary>True if the client sends nothing (but acks) for <paramref name="ms"/>: for "must wait" checks,
        /// which can only fail when the client is wrong, however slow the machine.</summary>
        public bool QuietFor(int ms)
        {
            _stream.ReadTimeout = ms;
            try
            {
                while (true)
                {
                    Http2Frame frame = Read();
                    if (frame == null) return true;
                    Seen.Add(frame);
                    if (frame.Type != Http2.Settings && frame.Type != Http2.Ping && frame.Type != Http2.WindowUpdate) return false;
                }
            }
            catch (IOException)
            {
                return true;  // read timed out: nothing was sent
            }
            finally
            {
                _stream.ReadTimeout = 10000;
            }
        }

        /// <summary>Frames skipped by Expect, for later checks.</summary>
        public readonly List<Http2Frame> Seen = new List<Http2Frame>();

        /// <summary>Reads the request: HEADERS (decoded) and the DATA up to END_STREAM (gRPC-framed message).</summary>
        public List<HeaderField> ExpectRequest(out byte[] message)
        {
            Http2Frame headers = Expect(Http2.Headers);
            List<HeaderField> fields = Decoder.Decode(headers.Payload);
            var body = new MemoryStream();
            Http2Frame data;
            do
            {
                data = Expect(Http2.Data);
                body.Write(data.Payload, 0, data.Payload.Length);
            } while (!data.Has(Http2.FlagEndStream));
            var messages = new GrpcMessageReader().Push(body.ToArray(), 0, (int)body.Length);
            message = messages.Count > 0 ? messages[0] : null;
            return fields;
        }

        public void Close()
        {
            _socket?.Close();
        }

        public void Dispose()
        {
            _socket?.Close();
            _listener.Stop();
        }

        // Header block builders: Huffman strings and the HPACK representations a server may use.
        public static byte[] Block(params byte[][] parts)
        {
            var all = new MemoryStream();
            foreach (byte[] p in parts) all.Write(p, 0, p.Length);
            return all.ToArray();
        }

        public static byte[] Indexed(int index)
        {
            var s = new MemoryStream();
            HpackEncoder.WriteInteger(s, 0x80, 7, index);
            return s.ToArray();
        }

        /// <summary>Literal with incremental indexing, new name, both strings Huffman-coded.</summary>
        public static byte[] Indexing(string name, string value) => Block(new byte[] { 0x40 }, Huff(name), Huff(value));

        /// <summary>Literal without indexing with an indexed name and a Huffman value.</summary>
        public static byte[] NotIndexed(int nameIndex, string value)
        {
            var s = new MemoryStream();
            HpackEncoder.WriteInteger(s, 0x00, 4, nameIndex);
            byte[] v = Huff(value);
            s.Write(v, 0, v.Length);
            return s.ToArray();
        }

        public static byte[] Huff(string text)
        {
            byte[] coded = Huffman.Encode(Encoding.UTF8.GetBytes(text));
            var s = new MemoryStream();
            HpackEncoder.WriteInteger(s, 0x80, 7, coded.Length);
            s.Write(coded, 0, coded.Length);
            return s.ToArray();
        }
    }
}
