using System;
using System.Collections.Generic;
using System.Linq;
using System.Net;
using System.Net.Sockets;
using System.Text;
using NpcVoice.Net;
using NpcVoice.V1;
using NUnit.Framework;
using P = NpcVoice.Tests.ScriptedPeer;

namespace NpcVoice.Tests
{
    /// <summary>The HTTP/2 client against a scripted server: the cases a grpcio daemon rarely or never produces.</summary>
    [TestFixture]
    public class ProtocolTests
    {
        private static readonly byte[] StartMessage = TestSupport.Hex("12170a06080110a2ac011201721a05677561726422036a6f65");
        private static readonly TimeSpan Bounded = TimeSpan.FromSeconds(10);

        private static NpcVoiceClient Client(P peer, int window = 16 << 20)
        {
            var options = new NpcVoiceClientOptions { StreamDeadline = TimeSpan.FromSeconds(20) };
            options.Http2.ConnectTimeout = TimeSpan.FromSeconds(5);
            options.Http2.InitialWindowSize = window;
            options.Http2.ConnectionWindowSize = window;
            return new NpcVoiceClient(peer.Address, options);
        }

        [Test, Timeout(30000)]
        public void HuffmanHeadersDynamicTableContinuationPingAndTrailersOnly()
        {
            using (var peer = new P())
            {
                peer.Run(p =>
                {
                    p.Handshake(Http2.SettingsMaxConcurrentStreams, 100);
                    p.Send(new Http2Frame(Http2.Ping, 0, 0, Encoding.ASCII.GetBytes("12345678")));
                    byte[] request;
                    List<HeaderField> headers = p.ExpectRequest(out request);
                    Assert.AreEqual("/npc_voice.v1.NpcVoice/Speak", GrpcWire.Find(headers, ":path"));
                    Assert.AreEqual("trailers", GrpcWire.Find(headers, "te"));
                    Assert.AreEqual("Bearer s3cret", GrpcWire.Find(headers, "authorization"));
                    StringAssert.EndsWith("m", GrpcWire.Find(headers, "grpc-timeout"));
                    Assert.AreEqual("0a05677561726412024869", TestSupport.ToHex(request), "SpeakRequest{guard, Hi}");
                    // Response headers: :status from the static table, content-type Huffman-coded into the table (62).
                    p.Send(new Http2Frame(Http2.Headers, Http2.FlagEndHeaders, 1,
                        P.Block(P.Indexed(8), P.Indexing("content-type", "application/grpc"))));
                    // One message in a padded DATA frame.
                    byte[] framed = GrpcWire.Frame(StartMessage);
                    var padded = new byte[1 + framed.Length + 3];
                    padded[0] = 3;
                    Buffer.BlockCopy(framed, 0, padded, 1, framed.Length);
                    p.Send(new Http2Frame(Http2.Data, Http2.FlagPadded, 1, padded));
                    // Trailers split over HEADERS + CONTINUATION; grpc-status goes into the table (62, content-type 63).
                    p.Send(new Http2Frame(Http2.Headers, Http2.FlagEndStream, 1, P.Indexing("grpc-status", "0")));
                    p.Send(new Http2Frame(Http2.Continuation, Http2.FlagEndHeaders, 1, 
                        P.Block(new byte[] { 0x00 }, P.Huff("grpc-message"), P.Huff("ok"))));
                    Http2Frame pong = p.Expect(Http2.Ping);
                    Assert.IsTrue(pong.Has(Http2.FlagAck));
                    Assert.AreEqual("12345678", Encoding.ASCII.GetString(pong.Payload));
                    Assert.IsTrue(p.Seen.Exists(f => f.Type == Http2.Settings && f.Has(Http2.FlagAck)), "SETTINGS acked");
                    Assert.IsTrue(p.Seen.Exists(f => f.Type == Http2.WindowUpdate && f.StreamId == 0), "connection window raised");
                    // Second call: Trailers-Only, every header from the dynamic table or Huffman literals.
                    p.ExpectRequest(out request);
                    p.Send(new Http2Frame(Http2.Headers, Http2.FlagEndHeaders | Http2.FlagEndStream, 3,
                        P.Block(P.Indexed(8), P.Indexed(63), P.NotIndexed(62, "5"),
                            P.Block(new byte[] { 0x10 }, P.Huff("grpc-message"), P.Huff("no voice %E2%80%94 sorry")))));
                });
                using (var authed = new NpcVoiceClient(peer.Address, new NpcVoiceClientOptions { AuthToken = "s3cret" }))
                {
                    SpeakCall call = authed.Speak(new SpeakRequest { Character = "guard", Text = "Hi" });
                    List<SpeakResponse> events = call.ReadAll().ToList();
                    Assert.AreEqual(1, events.Count);
                    Assert.AreEqual("joe", events[0].Start.Voice);
                    Assert.AreEqual(StatusCode.OK, call.Status.Code);
                    Assert.AreEqual("ok", call.Status.Detail);
                    var e = Assert.Throws<RpcException>(() => authed.Speak(new SpeakRequest { Text = "x" }).ReadAll().ToList());
                    Assert.AreEqual(StatusCode.NotFound, e.Code);
                    Assert.AreEqual("no voice \u2014 sorry", e.Status.Detail);
                    peer.Join();
                }
            }
        }

        [Test, Timeout(30000)]
        public void ReceiveWindowIsReplenishedAndSendWindowIsRespected()
        {
            using (var peer = new P())
            using (NpcVoiceClient client = Client(peer, window: 65535))
            {
                const int chunk = 16000;
                peer.Run(p =>
                {
                    // The server allows only 10 octets per stream: the 25-octet request must wait for credit.
                    p.Handshake(Http2.SettingsInitialWindowSize, 10);
                    p.Expect(Http2.Headers);
                    Http2Frame first = p.Expect(Http2.Data);
                    Assert.AreEqual(10, first.Payload.Length, "first DATA fills the window exactly");
                    Assert.IsFalse(first.Has(Http2.FlagEndStream));
                    p.Send(Http2Frame.WindowUpdateFrame(1, 1000));
                    Http2Frame rest = p.Expect(Http2.Data);
                    Assert.AreEqual(5 + 20, 10 + rest.Payload.Length, "gRPC prefix + SpeakRequest{guard, Hello there}");
                    Assert.IsTrue(rest.Has(Http2.FlagEndStream));
                    p.Send(new Http2Frame(Http2.Headers, Http2.FlagEndHeaders, 1,
                        P.Block(P.Indexed(8), P.Indexing("content-type", "application/grpc"))));
                    // 3 x 16000 octets: past half of the 65,535 window, so both windows must be replenished
                    // before the server may send the next 32,000.
                    byte[] audio = GrpcWire.Frame(new AudioResponse(5 * chunk - 5 - 8).Bytes);
                    for (int i = 0; i < 3; i++) p.Send(new Http2Frame(Http2.Data, 0, 1, audio.Skip(i * chunk).Take(chunk).ToArray()));
                    p.Expect(Http2.WindowUpdate, f => f.StreamId == 1);
                    p.Expect(Http2.WindowUpdate, f => f.StreamId == 0);
                    for (int i = 3; i < 5; i++) p.Send(new Http2Frame(Http2.Data, 0, 1, audio.Skip(i * chunk).Take(chunk).ToArray()));
                    p.Send(new Http2Frame(Http2.Headers, Http2.FlagEndHeaders | Http2.FlagEndStream, 1, P.Indexing("grpc-status", "0")));
                });
                SpeakCall call = client.Speak(new SpeakRequest { Character = "guard", Text = "Hello there" });
                Assert.IsTrue(call.Wait(TimeSpan.FromSeconds(20)));
                if (call.Status.Code != StatusCode.OK)
                {
                    peer.Join();  // the peer's failed assertion explains the client's status
                }
                List<SpeakResponse> events = call.ReadAll().ToList();
                Assert.AreEqual(1, events.Count);
                Assert.AreEqual(5 * chunk - 5 - 8, events[0].Audio.Pcm.Length, "one 80 KB message through a 64 KB window");
                peer.Join();
            }
        }

        /// <summary>A SpeakResponse whose serialized form is exactly the requested size (audio: 0x1a len {0x0a len pcm}).</summary>
        private sealed class AudioResponse
        {
            public readonly byte[] Bytes;

            public AudioResponse(int pcmLength)
            {
                var w = new ProtoWriter();
                var inner = new ProtoWriter();
                inner.Bytes(1, new byte[pcmLength]);
                w.Bytes(3, inner.ToArray());
                Bytes = w.ToArray();
                Assert.AreEqual(pcmLength + 8, Bytes.Length, "size arithmetic of the test message");
            }
        }

        [Test, Timeout(30000)]
        public void ResetGoAwayAndDroppedConnectionsEndCallsWithStatus()
        {
            using (var peer = new P())
            using (NpcVoiceClient client = Client(peer))
            {
                peer.Run(p =>
                {
                    p.Handshake();
                    byte[] request;
                    p.ExpectRequest(out request);                                   // stream 1
                    p.Send(Http2Frame.RstStreamFrame(1, Http2.RefusedStream));
                    p.ExpectRequest(out request);                                   // stream 3
                    p.ExpectRequest(out request);                                   // stream 5
                    p.Send(Http2Frame.GoAwayFrame(3, Http2.NoError, "shutting down"));  // 5 was never processed
                    p.Send(new Http2Frame(Http2.Headers, Http2.FlagEndHeaders, 3,
                        P.Block(P.Indexed(8), P.Indexing("content-type", "application/grpc"))));
                    p.Send(new Http2Frame(Http2.Data, 0, 3, GrpcWire.Frame(StartMessage).Take(7).ToArray()));
                    p.Close();                                                      // mid-message
                    p.Handshake();                                                  // the client reconnects
                    p.ExpectRequest(out request);
                    p.Send(new Http2Frame(Http2.Headers, Http2.FlagEndHeaders | Http2.FlagEndStream, 1,
                        P.Block(P.Indexed(14), P.Indexing("content-type", "text/html"))));   // :status 500, no grpc-status
                });
                SpeakCall refused = client.Speak(new SpeakRequest { Text = "a" });
                Assert.IsTrue(refused.Wait(Bounded));
                Assert.AreEqual(StatusCode.Unavailable, refused.Status.Code, refused.Status.ToString());
                int firstConnection = client.ConnectionId;
                SpeakCall processed = client.Speak(new SpeakRequest { Text = "b" });
                SpeakCall notProcessed = client.Speak(new SpeakRequest { Text = "c" });
                Assert.IsTrue(notProcessed.Wait(Bounded) && processed.Wait(Bounded), "no hang");
                Assert.AreEqual(StatusCode.Unavailable, notProcessed.Status.Code, notProcessed.Status.ToString());
                StringAssert.Contains("GOAWAY", notProcessed.Status.Detail);
                Assert.AreEqual(StatusCode.Unavailable, processed.Status.Code, processed.Status.ToString());
                SpeakCall afterDrop = client.Speak(new SpeakRequest { Text = "d" });
                Assert.IsTrue(afterDrop.Wait(Bounded));
                Assert.AreNotEqual(firstConnection, client.ConnectionId, "a new connection");
                Assert.AreEqual(StatusCode.Unknown, afterDrop.Status.Code, "HTTP 500 without grpc-status: " + afterDrop.Status);
                peer.Join();
            }
        }

        [Test, Timeout(30000)]
        public void CallsBeyondTheServersStreamLimitWaitForAFreeStream()
        {
            using (var peer = new P())
            using (NpcVoiceClient client = Client(peer))
            {
                peer.Run(p =>
                {
                    p.Handshake(Http2.SettingsMaxConcurrentStreams, 1);
                    byte[] request;
                    p.ExpectRequest(out request);
                    Assert.IsTrue(p.QuietFor(300), "the second call must not open a stream while the first is open");
                    p.Send(new Http2Frame(Http2.Headers, Http2.FlagEndHeaders | Http2.FlagEndStream, 1,
                        P.Block(P.Indexed(8), P.Indexing("content-type", "application/grpc"), P.Indexing("grpc-status", "0"))));
                    Http2Frame next = p.Expect(Http2.Headers);
                    Assert.AreEqual(3, next.StreamId);
                    p.Expect(Http2.Data, f => f.Has(Http2.FlagEndStream));
                    p.Send(new Http2Frame(Http2.Headers, Http2.FlagEndHeaders | Http2.FlagEndStream, 3,
                        P.Block(P.Indexed(8), P.Indexed(63), P.Indexed(62))));
                });
                client.Connect();
                SpeakCall first = client.Speak(new SpeakRequest { Text = "one" });
                SpeakCall second = null;
                var starter = new System.Threading.Thread(() => second = client.Speak(new SpeakRequest { Text = "two" }));
                starter.Start();
                Assert.IsTrue(first.Wait(Bounded));
                Assert.IsTrue(starter.Join(Bounded), "the second call starts once the first ends");
                Assert.IsTrue(second.Wait(Bounded));
                Assert.AreEqual(StatusCode.OK, first.Status.Code, first.Status.ToString());
                Assert.AreEqual(StatusCode.OK, second.Status.Code, second.Status.ToString());
                peer.Join();
            }
        }

        [Test, Timeout(30000)]
        public void ServersThatDoNotSpeakHttp2FailConnectWithUnavailable()
        {
            using (var peer = new P())
            {
                peer.Run(p =>
                {
                    p.Accept();
                    p.SendRaw(Encoding.ASCII.GetBytes("HTTP/1.1 400 Bad Request\r\nConnection: close\r\n\r\n"));
                    p.Close();
                    p.Accept();  // accepts and says nothing: the connect timeout must fire
                });
                var options = new NpcVoiceClientOptions();
                options.Http2.ConnectTimeout = TimeSpan.FromMilliseconds(500);
                using (var client = new NpcVoiceClient(peer.Address, options))
                {
                    var e = Assert.Throws<RpcException>(() => client.Connect());
                    Assert.AreEqual(StatusCode.Unavailable, e.Code, e.Status.ToString());
                    e = Assert.Throws<RpcException>(() => client.Connect());
                    Assert.AreEqual(StatusCode.Unavailable, e.Code, e.Status.ToString());
                    StringAssert.Contains("SETTINGS", e.Status.Detail);
                }
                peer.Join();
            }
            // Nobody listening at all.
            var closed = new TcpListener(IPAddress.Loopback, 0);
            closed.Start();
            int port = ((IPEndPoint)closed.LocalEndpoint).Port;
            closed.Stop();
            using (var client = new NpcVoiceClient("127.0.0.1:" + port))
            {
                RpcStatus status = default(RpcStatus);
                SpeakCall call = client.Speak(new SpeakRequest { Text = "x" }, e => { }, s => status = s);
                Assert.IsTrue(call.IsCompleted, "a call that cannot connect ends at once");
                Assert.AreEqual(StatusCode.Unavailable, call.Status.Code);
                Assert.AreEqual(StatusCode.Unavailable, status.Code, "and says so to its completion callback");
                var e2 = Assert.Throws<RpcException>(() => client.Speak(new SpeakRequest { Text = "x" }).ReadAll().ToList());
                Assert.AreEqual(StatusCode.Unavailable, e2.Code);
            }
        }

        [Test, Timeout(30000)]
        public void CallsAboutACharacterCarryTheRoutingHeader()
        {
            var seen = new List<string>();  // "<method> <x-npc-character or ->"
            string firstRequest = null;
            // Trailers-Only OK: :status 200 (static 8), content-type and grpc-status as literals never indexed.
            byte[] ok = P.Block(P.Indexed(8), new byte[] { 0x00 }, P.Huff("content-type"), P.Huff("application/grpc"),
                new byte[] { 0x00 }, P.Huff("grpc-status"), P.Huff("0"));
            using (var peer = new P())
            using (NpcVoiceClient client = Client(peer))
            {
                peer.Run(p =>
                {
                    p.Handshake();
                    for (int stream = 1; stream <= 11; stream += 2)
                    {
                        byte[] request;
                        List<HeaderField> headers = p.ExpectRequest(out request);
                        string path = GrpcWire.Find(headers, ":path");
                        lock (seen)
                        {
                            seen.Add(path.Substring(path.LastIndexOf('/') + 1) + " " +
                                (GrpcWire.Find(headers, NpcVoiceClient.CharacterHeader) ?? "-"));
                            firstRequest = firstRequest ?? TestSupport.ToHex(request);
                        }
                        p.Send(new Http2Frame(Http2.Headers, Http2.FlagEndHeaders | Http2.FlagEndStream, stream, ok));
                    }
                });
                client.Speak(new SpeakRequest { Character = "guard/1", Text = "a", BusyPolicy = BusyPolicy.Interrupt })
                    .ReadAll().ToList();
                ConverseCall talk = client.Converse("merchant/2");
                talk.CompleteRequests();
                Assert.IsTrue(talk.Wait(Bounded));
                Assert.Throws<RpcException>(() => client.Cancel(new CancelRequest { Character = "guard/3" }),
                    "no response message");
                client.Speak(new SpeakRequest { Text = "the default character" }).ReadAll().ToList();
                ConverseCall unrouted = client.Converse(e => { });
                unrouted.CompleteRequests();
                Assert.IsTrue(unrouted.Wait(Bounded));
                client.Speak(new SpeakRequest { Character = "g\u00e4rd", Text = "x" }).ReadAll().ToList();
                peer.Join();
            }
            CollectionAssert.AreEqual(new[]
            {
                "Speak guard/1", "Converse merchant/2", "Cancel guard/3",
                "Speak -", "Converse -", "Speak -",  // default character, no character given, not ASCII
            }, seen);
            Assert.AreEqual("0a0767756172642f311201613002", firstRequest, "SpeakRequest{guard/1, a, busy_policy 2}");
        }

        [Test]
        public void AddressMustBeHostAndPort()
        {
            Assert.Throws<ArgumentException>(() => new NpcVoiceClient("localhost"));
            Assert.Throws<ArgumentException>(() => new NpcVoiceClient("localhost:http"));
            Assert.Throws<ArgumentException>(() => new NpcVoiceClient("localhost:70000"));
            Assert.AreEqual("::1:50051", new NpcVoiceClient("[::1]:50051").Address);
        }
    }
}
