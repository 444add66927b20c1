using System;
using System.Collections.Concurrent;
using System.Collections.Generic;
using System.Threading;
using NpcVoice.Audio;
using NpcVoice.V1;
using UnityEngine;
using UnityEngine.Events;

namespace NpcVoice.Unity
{
    /// <summary>
    /// Put beside an AudioSource on a character: Speak("...") streams the line from the npc-voice daemon into a
    /// ring buffer that the audio thread plays (OnAudioFilterRead), resampled to the output rate when the daemon
    /// cannot send it directly. Marks (visemes for lip-sync, words for subtitles, phonemes) are raised as
    /// UnityEvents on the main thread when the audio thread reaches their sample.
    /// </summary>
    [RequireComponent(typeof(AudioSource))]
    [DisallowMultipleComponent]
    [AddComponentMenu("Audio/NPC Voice Source")]
    public sealed class NpcVoiceSource : MonoBehaviour
    {
        [Serializable] public sealed class LineEvent : UnityEvent<string> { }
        [Serializable] public sealed class LineFinishedEvent : UnityEvent<string, bool> { }
        [Serializable] public sealed class MarkEvent : UnityEvent<string, float> { }
        [Serializable] public sealed class ErrorEvent : UnityEvent<string, string> { }

        private static readonly int[] DaemonRates = { 16000, 22050, 24000, 44100, 48000 };

        [Header("Daemon")]
        [Tooltip("host:port of `npc-voice serve`.")]
        [SerializeField] private string address = "127.0.0.1:50051";
        [Tooltip("Bearer token, when the daemon was started with one.")]
        [SerializeField] private string authToken = "";
        [Tooltip("voices.yaml character, or an instance such as guard/42 (own voice state). Empty = default.")]
        [SerializeField] private string character = "";

        [Header("Playback")]
        [Tooltip("On: 3D panning and rolloff of the AudioSource apply to the voice. Off: the voice replaces its signal.")]
        [SerializeField] private bool spatialize = true;
        [Tooltip("Audio held ready for the audio thread, seconds (the rest of a line waits in memory until there is room).")]
        [Range(0.25f, 8f)]
        [SerializeField] private float bufferSeconds = 1f;
        [Tooltip("Fade-out on Cancel, seconds.")]
        [Range(0.001f, 0.2f)]
        [SerializeField] private float cancelFade = 0.02f;

        [Header("Events (main thread, on the audio clock)")]
        public LineEvent onLineStarted = new LineEvent();
        public LineFinishedEvent onLineFinished = new LineFinishedEvent();  // (text, cancelled)
        public MarkEvent onViseme = new MarkEvent();    // (viseme, seconds): sil PP FF TH DD kk CH SS nn RR aa E ih oh ou
        public MarkEvent onWord = new MarkEvent();      // (word, seconds)
        public MarkEvent onPhoneme = new MarkEvent();   // (IPA phoneme, seconds)
        public ErrorEvent onError = new ErrorEvent();   // (gRPC status code name, message)

        private static readonly Dictionary<string, NpcVoiceClient> Clients = new Dictionary<string, NpcVoiceClient>();
        private static bool _quitHooked;
        private static AudioClip _carrier;  // shared by all sources: 4096 samples of 1.0, looped

        private SpeechPlayback _playback;
        private NpcVoiceClient _client;
        private readonly Dictionary<int, string> _lineTexts = new Dictionary<int, string>();
        private readonly Dictionary<int, SpeakCall> _calls = new Dictionary<int, SpeakCall>();  // guarded by itself
        private readonly ConcurrentQueue<RpcStatus> _errors = new ConcurrentQueue<RpcStatus>();
        private readonly List<PlaybackEvent> _events = new List<PlaybackEvent>();
        private int _outputRate;
        private int _latencySamples;  // one DSP buffer: audio taken by OnAudioFilterRead is heard about this much later
        private int _lastLineId;
        private int _cancelledThrough;  // lines up to this id were cancelled (a worker may still be starting one)

        public string Character
        {
            get { return character; }
            set { character = value ?? ""; }
        }

        /// <summary>The shared client for this component's address (one HTTP/2 connection per address).</summary>
        public NpcVoiceClient Client => _client ?? (_client = SharedClient(address, authToken));

        public bool IsSpeaking => _playback != null && _playback.IsSpeaking;

        /// <summary>Audio underruns so far (the network or daemon fell behind playback).</summary>
        public long Underruns => _playback?.Underruns ?? 0;

        public static NpcVoiceClient SharedClient(string address, string token)
        {
            lock (Clients)
            {
                string key = address + "|" + token;
                NpcVoiceClient client;
                if (!Clients.TryGetValue(key, out client))
                {
                    client = new NpcVoiceClient(address, new NpcVoiceClientOptions { AuthToken = token });
                    Clients[key] = client;
                }
                return client;
            }
        }

        /// <summary>Closes the shared connections (done automatically when the application quits).</summary>
        public static void DisposeSharedClients()
        {
            List<NpcVoiceClient> clients;
            lock (Clients)
            {
                clients = new List<NpcVoiceClient>(Clients.Values);
                Clients.Clear();
            }
            foreach (NpcVoiceClient client in clients)
            {
                client.Dispose();
            }
        }

        private static AudioClip Carrier(int rate)
        {
            if (_carrier == null)
            {
                var ones = new float[4096];
                for (int i = 0; i < ones.Length; i++)
                {
                    ones[i] = 1f;
                }
                _carrier = AudioClip.Create("npc-voice carrier", ones.Length, 1, rate, false);
                _carrier.SetData(ones, 0);
            }
            return _carrier;
        }

        private void Awake() => EnsureInitialized();

        // Awake, or the first Speak/Cancel if another object's Awake calls them earlier.
        private void EnsureInitialized()
        {
            if (_playback != null)
            {
                return;
            }
            _outputRate = AudioSettings.outputSampleRate;
            int bufferLength, bufferCount;
            AudioSettings.GetDSPBufferSize(out bufferLength, out bufferCount);
            _latencySamples = bufferLength;
            lock (Clients)
            {
                if (!_quitHooked)
                {
                    Application.quitting += DisposeSharedClients;
                    _quitHooked = true;
                }
            }
            _playback = new SpeechPlayback(_outputRate, bufferSeconds, cancelFade);
            // A looping constant 1.0 clip: Unity spatializes it, and OnAudioFilterRead multiplies in the voice.
            AudioClip carrier = Carrier(_outputRate);
            AudioSource source = GetComponent<AudioSource>();
            source.clip = carrier;
            source.loop = true;
            source.playOnAwake = true;
            source.Play();
        }

        /// <summary>Queues a line; it plays after the lines already queued. Never blocks the main thread.</summary>
        public void Speak(string text, VoiceOverrides overrides = null)
        {
            EnsureInitialized();
            int lineId = _playback.BeginLine();
            _lastLineId = lineId;
            _lineTexts[lineId] = text;
            var request = new SpeakRequest
            {
                Character = character,
                Text = text,
                Overrides = overrides,
                // Ask for the mixer's rate so no resampling happens here; other rates are resampled linearly.
                Format = new AudioFormat
                {
                    Encoding = AudioEncoding.PcmS16Le,
                    SampleRateHz = Array.IndexOf(DaemonRates, _outputRate) >= 0 ? (uint)_outputRate : 0,
                },
            };
            NpcVoiceClient client = Client;
            // Connecting may take up to the connect timeout: do it off the main thread.
            ThreadPool.QueueUserWorkItem(_ => StartLine(client, request, lineId));
        }

        /// <summary>Stops speaking now: fades out, drops queued lines, and cancels their streams on the daemon.</summary>
        public void Cancel()
        {
            EnsureInitialized();
            _playback.Cancel();
            Volatile.Write(ref _cancelledThrough, _lastLineId);
            List<SpeakCall> calls;
            lock (_calls)
            {
                calls = new List<SpeakCall>(_calls.Values);
                _calls.Clear();
            }
            foreach (SpeakCall call in calls)
            {
                call.Cancel();  // RST_STREAM: the daemon stops generating and frees the slot
            }
        }

        private void StartLine(NpcVoiceClient client, SpeakRequest request, int lineId)
        {
            // Failures (no daemon, unknown character, ...) arrive at OnComplete with their status.
            SpeakCall call = client.Speak(request, e => OnEvent(lineId, e), status => OnComplete(lineId, status));
            lock (_calls)
            {
                if (!call.IsCompleted)
                {
                    _calls[lineId] = call;
                }
            }
            if (lineId <= Volatile.Read(ref _cancelledThrough))
            {
                call.Cancel();  // Cancel() ran while this line was still connecting
            }
        }

        // Network thread.
        private void OnEvent(int lineId, SpeakResponse e)
        {
            if (e.Start != null)
            {
                _playback.SetFormat(lineId, (int)e.Start.Format.SampleRateHz, e.Start.Format.Encoding);
            }
            else if (e.Audio != null)
            {
                _playback.WriteAudio(lineId, e.Audio.Pcm);
            }
            else if (e.Marks != null)
            {
                _playback.AddMarks(lineId, e.Marks);
            }
            else if (e.End != null)
            {
                _playback.EndLine(lineId);
            }
        }

        // Network (or worker) thread.
        private void OnComplete(int lineId, RpcStatus status)
        {
            _playback.EndLine(lineId);
            lock (_calls)
            {
                _calls.Remove(lineId);
            }
            if (status.Code != StatusCode.OK && status.Code != StatusCode.Cancelled)
            {
                _errors.Enqueue(status);
            }
        }

        private void Update()
        {
            _playback.Pump();
            RpcStatus error;
            while (_errors.TryDequeue(out error))
            {
                Debug.LogWarning("npc-voice: " + error);
                onError.Invoke(error.Code.ToString(), error.Detail);
            }
            _events.Clear();
            _playback.DrainEvents(_events, _latencySamples);
            foreach (PlaybackEvent e in _events)
            {
                Raise(e);
            }
        }

        private void Raise(PlaybackEvent e)
        {
            string text;
            _lineTexts.TryGetValue(e.LineId, out text);
            switch (e.Kind)
            {
                case PlaybackEventKind.LineStarted: onLineStarted.Invoke(text ?? ""); break;
                case PlaybackEventKind.Viseme: onViseme.Invoke(e.Label, e.Duration); break;
                case PlaybackEventKind.Word: onWord.Invoke(e.Label, e.Duration); break;
                case PlaybackEventKind.Phoneme: onPhoneme.Invoke(e.Label, e.Duration); break;
                case PlaybackEventKind.LineFinished:
                    _lineTexts.Remove(e.LineId);
                    onLineFinished.Invoke(text ?? "", e.Cancelled);
                    break;
            }
        }

        // Audio thread: no locks, no allocation.
        private void OnAudioFilterRead(float[] data, int channels)
        {
            _playback?.ReadInterleaved(data, channels, spatialize);
        }

        private void OnDestroy()
        {
            if (_playback != null)
            {
                Cancel();
            }
        }
    }
}
