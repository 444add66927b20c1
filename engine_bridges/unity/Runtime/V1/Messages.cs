using System.Collections.Generic;

// Hand-written protobuf messages of proto/npc_voice/v1/npc_voice.proto (field numbers must match it).
namespace NpcVoice.V1
{
    public enum AudioEncoding
    {
        Unspecified = 0,
        PcmS16Le = 1,
        PcmF32Le = 2,
    }

    public enum EndReason
    {
        Unspecified = 0,
        Completed = 1,
        Cancelled = 2,    // Cancel, a Converse cancel, or the daemon shutting down
        Interrupted = 3,  // a newer Speak for the same character with BusyPolicy.Interrupt
    }

    /// <summary>What Speak does when the same character is already speaking (SpeakRequest.BusyPolicy).</summary>
    public enum BusyPolicy
    {
        Unspecified = 0,  // = Queue
        Queue = 1,        // wait behind the current line, then continue the character's state
        Interrupt = 2,    // end the current line (EndReason.Interrupted, with a fade) and speak now
        Reject = 3,       // RESOURCE_EXHAUSTED at once if the character is speaking or has lines waiting
    }

    public sealed class AudioFormat : IProtoMessage
    {
        public AudioEncoding Encoding;
        public uint SampleRateHz;  // 16000, 22050, 24000, 44100 or 48000; 0 = the daemon's default

        public byte[] ToBytes()
        {
            var w = new ProtoWriter();
            w.UInt64(1, (ulong)Encoding);
            w.UInt64(2, SampleRateHz);
            return w.ToArray();
        }

        public static AudioFormat Parse(ProtoReader r)
        {
            var m = new AudioFormat();
            for (int f; (f = r.Next()) != 0;)
            {
                if (f == 1) m.Encoding = (AudioEncoding)r.UInt64();
                else if (f == 2) m.SampleRateHz = r.UInt32();
                else r.Skip();
            }
            return m;
        }
    }

    /// <summary>Per-request voice changes; null leaves the character's value alone.</summary>
    public sealed class VoiceOverrides : IProtoMessage
    {
        public float? Speed;           // 0.5 .. 2.0
        public float? PitchSemitones;  // -12 .. 12
        public float? Volume;          // 0 .. 4
        public float? Formant;         // 0.7 .. 1.4
        public float? Breathiness;     // added, clamped to 0 .. 1

        public byte[] ToBytes()
        {
            var w = new ProtoWriter();
            if (Speed.HasValue) w.Float(1, Speed.Value, true);
            if (PitchSemitones.HasValue) w.Float(2, PitchSemitones.Value, true);
            if (Volume.HasValue) w.Float(3, Volume.Value, true);
            if (Formant.HasValue) w.Float(4, Formant.Value, true);
            if (Breathiness.HasValue) w.Float(5, Breathiness.Value, true);
            return w.ToArray();
        }
    }

    public sealed class SpeakRequest : IProtoMessage
    {
        public string Character = "";  // "" = the daemon's default character; "guard/42" = an instance
        public string Text = "";
        public AudioFormat Format;
        public string RequestId = "";
        public VoiceOverrides Overrides;
        public BusyPolicy BusyPolicy;  // when this character is already speaking (Unspecified = Queue)

        public byte[] ToBytes()
        {
            var w = new ProtoWriter();
            w.String(1, Character);
            w.String(2, Text);
            w.Message(3, Format);
            w.String(4, RequestId);
            w.Message(5, Overrides);
            w.UInt64(6, (ulong)BusyPolicy);
            return w.ToArray();
        }
    }

    /// <summary>One event of a Speak or Converse stream: exactly one of Start, Audio, Marks, End is set.</summary>
    public sealed class SpeakResponse
    {
        public string ContextId = "";
        public StreamStart Start;
        public AudioChunk Audio;
        public Marks Marks;
        public StreamEnd End;

        public static SpeakResponse Parse(byte[] data)
        {
            var r = new ProtoReader(data);
            var m = new SpeakResponse();
            for (int f; (f = r.Next()) != 0;)
            {
                if (f == 1) m.ContextId = r.String();
                else if (f == 2) m.Start = StreamStart.Parse(r.Message());
                else if (f == 3) m.Audio = AudioChunk.Parse(r.Message());
                else if (f == 4) m.Marks = Marks.Parse(r.Message());
                else if (f == 5) m.End = StreamEnd.Parse(r.Message());
                else r.Skip();
            }
            return m;
        }
    }

    public sealed class StreamStart
    {
        public AudioFormat Format = new AudioFormat();
        public string RequestId = "";
        public string Character = "";
        public string Voice = "";

        public static StreamStart Parse(ProtoReader r)
        {
            var m = new StreamStart();
            for (int f; (f = r.Next()) != 0;)
            {
                if (f == 1) m.Format = AudioFormat.Parse(r.Message());
                else if (f == 2) m.RequestId = r.String();
                else if (f == 3) m.Character = r.String();
                else if (f == 4) m.Voice = r.String();
                else r.Skip();
            }
            return m;
        }
    }

    public sealed class AudioChunk
    {
        public byte[] Pcm = new byte[0];
        public ulong SampleOffset;  // first sample of this chunk, counted from the stream start

        public static AudioChunk Parse(ProtoReader r)
        {
            var m = new AudioChunk();
            for (int f; (f = r.Next()) != 0;)
            {
                if (f == 1) m.Pcm = r.Bytes();
                else if (f == 2) m.SampleOffset = r.UInt64();
                else r.Skip();
            }
            return m;
        }
    }

    public sealed class Mark
    {
        public string Label = "";  // IPA phoneme, viseme (sil PP FF TH DD kk CH SS nn RR aa E ih oh ou) or word
        public ulong StartSample;
        public ulong EndSample;    // exclusive

        public static Mark Parse(ProtoReader r)
        {
            var m = new Mark();
            for (int f; (f = r.Next()) != 0;)
            {
                if (f == 1) m.Label = r.String();
                else if (f == 2) m.StartSample = r.UInt64();
                else if (f == 3) m.EndSample = r.UInt64();
                else r.Skip();
            }
            return m;
        }
    }

    /// <summary>Marks arrive before the audio they describe.</summary>
    public sealed class Marks
    {
        public readonly List<Mark> Phonemes = new List<Mark>();
        public readonly List<Mark> Visemes = new List<Mark>();
        public readonly List<Mark> Words = new List<Mark>();

        public static Marks Parse(ProtoReader r)
        {
            var m = new Marks();
            for (int f; (f = r.Next()) != 0;)
            {
                if (f == 1) m.Phonemes.Add(Mark.Parse(r.Message()));
                else if (f == 2) m.Visemes.Add(Mark.Parse(r.Message()));
                else if (f == 3) m.Words.Add(Mark.Parse(r.Message()));
                else r.Skip();
            }
            return m;
        }
    }

    public sealed class Timings
    {
        public double QueuedMs, FirstAudioMs, TotalMs, AudioMs;

        public static Timings Parse(ProtoReader r)
        {
            var m = new Timings();
            for (int f; (f = r.Next()) != 0;)
            {
                if (f == 1) m.QueuedMs = r.Double();
                else if (f == 2) m.FirstAudioMs = r.Double();
                else if (f == 3) m.TotalMs = r.Double();
                else if (f == 4) m.AudioMs = r.Double();
                else r.Skip();
            }
            return m;
        }
    }

    public sealed class StreamEnd
    {
        public EndReason Reason;
        public ulong TotalSamples;
        public Timings Timings = new Timings();
        public string RequestId = "";

        public static StreamEnd Parse(ProtoReader r)
        {
            var m = new StreamEnd();
            for (int f; (f = r.Next()) != 0;)
            {
                if (f == 1) m.Reason = (EndReason)r.UInt64();
                else if (f == 2) m.TotalSamples = r.UInt64();
                else if (f == 3) m.Timings = Timings.Parse(r.Message());
                else if (f == 4) m.RequestId = r.String();
                else r.Skip();
            }
            return m;
        }
    }

    public sealed class ConverseConfig : IProtoMessage
    {
        public string Character = "";
        public AudioFormat Format;
        public VoiceOverrides Overrides;
        public uint MaxBufferDelayMs;  // 0 = the daemon's 400 ms
        public string RequestId = "";

        public byte[] ToBytes()
        {
            var w = new ProtoWriter();
            w.String(1, Character);
            w.Message(2, Format);
            w.Message(3, Overrides);
            w.UInt64(4, MaxBufferDelayMs);
            w.String(5, RequestId);
            return w.ToArray();
        }
    }

    /// <summary>One Converse action for a context; build with the static methods (the proto's oneof).</summary>
    public sealed class ConverseRequest : IProtoMessage
    {
        private enum Kind { Config, Text, Flush, Cancel, Close }

        public readonly string ContextId;
        private readonly Kind _kind;
        private readonly ConverseConfig _config;
        private readonly string _text;

        private ConverseRequest(string contextId, Kind kind, ConverseConfig config = null, string text = null)
        {
            ContextId = contextId ?? "";
            _kind = kind;
            _config = config;
            _text = text;
        }

        public static ConverseRequest Configure(string contextId, ConverseConfig config) =>
            new ConverseRequest(contextId, Kind.Config, config ?? new ConverseConfig());

        public static ConverseRequest AppendText(string contextId, string text) =>
            new ConverseRequest(contextId, Kind.Text, text: text ?? "");

        public static ConverseRequest Flush(string contextId) => new ConverseRequest(contextId, Kind.Flush);

        public static ConverseRequest Cancel(string contextId) => new ConverseRequest(contextId, Kind.Cancel);

        public static ConverseRequest Close(string contextId) => new ConverseRequest(contextId, Kind.Close);

        public byte[] ToBytes()
        {
            var w = new ProtoWriter();
            w.String(1, ContextId);
            // A oneof member is written even when it holds its default value.
            switch (_kind)
            {
                case Kind.Config: w.Message(2, _config); break;
                case Kind.Text: w.String(3, _text, true); break;
                case Kind.Flush: w.Bool(4, true, true); break;
                case Kind.Cancel: w.Bool(5, true, true); break;
                case Kind.Close: w.Bool(6, true, true); break;
            }
            return w.ToArray();
        }
    }
}
