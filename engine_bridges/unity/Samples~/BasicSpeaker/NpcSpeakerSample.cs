using NpcVoice.Unity;
using UnityEngine;

namespace NpcVoice.Samples
{
    /// <summary>
    /// Sample: put on a character with an NpcVoiceSource (and an AudioSource). Speaks a greeting on Start,
    /// Return speaks the next line, Space interrupts. Words go to the console as subtitles; visemes drive a mouth
    /// blend shape when one is assigned.
    /// </summary>
    public sealed class NpcSpeakerSample : MonoBehaviour
    {
        [SerializeField] private string[] lines =
        {
            "Halt! Who goes there?",
            "The market opens at dawn. Come back then, traveller.",
            "Move along, citizen. Nothing to see here.",
        };
        [Tooltip("Optional: a face mesh with a 'mouth open' blend shape.")]
        [SerializeField] private SkinnedMeshRenderer face;
        [SerializeField] private int mouthOpenBlendShape;

        private NpcVoiceSource _voice;
        private int _next;
        private float _mouthTarget;
        private float _mouth;

        private void Start()
        {
            _voice = GetComponent<NpcVoiceSource>();
            _voice.onWord.AddListener((word, seconds) => Debug.Log("[subtitle] " + word));
            _voice.onViseme.AddListener(OnViseme);
            _voice.onLineFinished.AddListener((text, cancelled) => _mouthTarget = 0f);
            _voice.onError.AddListener((code, message) => Debug.LogError("npc-voice " + code + ": " + message));
            SpeakNext();
        }

        private void SpeakNext()
        {
            _voice.Speak(lines[_next % lines.Length]);
            _next++;
        }

        // A crude jaw: open vowels open wide, closed consonants shut. Replace with your rig's viseme set.
        private void OnViseme(string viseme, float seconds)
        {
            switch (viseme)
            {
                case "aa": _mouthTarget = 1f; break;
                case "oh": case "ou": case "E": _mouthTarget = 0.7f; break;
                case "ih": case "RR": case "CH": case "SS": _mouthTarget = 0.4f; break;
                case "sil": case "PP": case "FF": case "TH": _mouthTarget = 0.05f; break;
                default: _mouthTarget = 0.25f; break;
            }
        }

        private void Update()
        {
            if (Input.GetKeyDown(KeyCode.Return))
            {
                SpeakNext();
            }
            if (Input.GetKeyDown(KeyCode.Space))
            {
                _voice.Cancel();
            }
            _mouth = Mathf.MoveTowards(_mouth, _mouthTarget, Time.deltaTime * 12f);
            if (face != null)
            {
                face.SetBlendShapeWeight(mouthOpenBlendShape, _mouth * 100f);
            }
        }
    }
}
