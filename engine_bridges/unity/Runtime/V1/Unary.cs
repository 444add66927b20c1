using System.Collections.Generic;

// Unary request/response messages of npc_voice.v1 used by the client.
namespace NpcVoice.V1
{
    public sealed class CancelRequest : IProtoMessage
    {
        public string Character = "";
        public string RequestId = "";  // optional: only cancel this request

        public byte[] ToBytes()
        {
            var w = new ProtoWriter();
            w.String(1, Character);
            w.String(2, RequestId);
            return w.ToArray();
        }
    }

    public sealed class CancelResponse
    {
        public bool Cancelled;          // false when the character was not speaking
        public ulong SamplesProduced;  // samples of the cancelled line sent, fade included

        public static CancelResponse Parse(byte[] data)
        {
            var r = new ProtoReader(data);
            var m = new CancelResponse();
            for (int f; (f = r.Next()) != 0;)
            {
                if (f == 1) m.Cancelled = r.Bool();
                else if (f == 2) m.SamplesProduced = r.UInt64();
                else r.Skip();
            }
            return m;
        }
    }

    /// <summary>A request message with no fields (ListCharactersRequest, GetStatsRequest, ...).</summary>
    public sealed class EmptyRequest : IProtoMessage
    {
        public byte[] ToBytes() => new byte[0];
    }

    public sealed class CharacterInfo
    {
        public string Name = "";
        public string Voice = "";
        public string Description = "";
        public AudioFormat DefaultFormat = new AudioFormat();

        public static CharacterInfo Parse(ProtoReader r)
        {
            var m = new CharacterInfo();
            for (int f; (f = r.Next()) != 0;)
            {
                if (f == 1) m.Name = r.String();
                else if (f == 2) m.Voice = r.String();
                else if (f == 3) m.Description = r.String();
                else if (f == 9) m.DefaultFormat = AudioFormat.Parse(r.Message());
                else r.Skip();
            }
            return m;
        }
    }

    public sealed class ListCharactersResponse
    {
        public readonly List<CharacterInfo> Characters = new List<CharacterInfo>();
        public string DefaultCharacter = "";

        public static ListCharactersResponse Parse(byte[] data)
        {
            var r = new ProtoReader(data);
            var m = new ListCharactersResponse();
            for (int f; (f = r.Next()) != 0;)
            {
                if (f == 1) m.Characters.Add(CharacterInfo.Parse(r.Message()));
                else if (f == 2) m.DefaultCharacter = r.String();
                else r.Skip();
            }
            return m;
        }
    }

    /// <summary>The daemon's counters (a subset of GetStatsResponse).</summary>
    public sealed class GetStatsResponse
    {
        public uint ActiveStreams;
        public uint SlotsInUse;
        public uint SlotsTotal;
        public ulong Underruns;
        public string Device = "";
        public ulong LinesCompleted;
        public ulong LinesCancelled;
        public ulong LinesRejected;

        public static GetStatsResponse Parse(byte[] data)
        {
            var r = new ProtoReader(data);
            var m = new GetStatsResponse();
            for (int f; (f = r.Next()) != 0;)
            {
                if (f == 1) m.ActiveStreams = r.UInt32();
                else if (f == 2) m.SlotsInUse = r.UInt32();
                else if (f == 3) m.SlotsTotal = r.UInt32();
                else if (f == 7) m.Underruns = r.UInt64();
                else if (f == 10) m.Device = r.String();
                else if (f == 11) m.LinesCompleted = r.UInt64();
                else if (f == 12) m.LinesCancelled = r.UInt64();
                else if (f == 13) m.LinesRejected = r.UInt64();
                else r.Skip();
            }
            return m;
        }
    }
}
