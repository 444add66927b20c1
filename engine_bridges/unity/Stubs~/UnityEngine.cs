// Stand-in for the few UnityEngine types the package's MonoBehaviour glue uses. NOT Unity: just enough behaviour
// for `mcs` to type-check Runtime/Unity/ outside the editor and for GlueTests to drive NpcVoiceSource by hand
// (components per object, events that call their listeners). The folder ends in "~" so Unity never imports it.
// Keep the signatures the glue uses identical to Unity's (docs.unity3d.com/ScriptReference).
using System;
using System.Collections.Generic;

namespace UnityEngine
{
    public class Object
    {
        public string name { get; set; }
    }

    public class GameObject : Object
    {
        internal readonly Dictionary<Type, object> Components = new Dictionary<Type, object>();
    }

    public class Component : Object
    {
        private GameObject _gameObject;

        public GameObject gameObject => _gameObject ?? (_gameObject = new GameObject());

        // Stub: a missing component is created on first request (as [RequireComponent] would have added it).
        public T GetComponent<T>()
        {
            object component;
            if (!gameObject.Components.TryGetValue(typeof(T), out component))
            {
                component = Activator.CreateInstance(typeof(T));
                gameObject.Components[typeof(T)] = component;
            }
            return (T)component;
        }
    }

    public class Behaviour : Component
    {
        public bool enabled { get; set; }
    }

    public class MonoBehaviour : Behaviour
    {
    }

    public sealed class AudioClip : Object
    {
        public static AudioClip Create(string name, int lengthSamples, int channels, int frequency, bool stream) => new AudioClip();

        public bool SetData(float[] data, int offsetSamples) => true;
    }

    public sealed class AudioSource : Behaviour
    {
        public AudioClip clip { get; set; }
        public bool loop { get; set; }
        public bool playOnAwake { get; set; }
        public bool isPlaying { get; private set; }

        public void Play() => isPlaying = true;

        public void Stop() => isPlaying = false;
    }

    public sealed class SkinnedMeshRenderer : Component
    {
        public void SetBlendShapeWeight(int index, float value)
        {
        }
    }

    public enum KeyCode
    {
        None = 0,
        Return = 13,
        Space = 32,
    }

    public sealed class Input
    {
        public static bool GetKeyDown(KeyCode key) => false;
    }

    public sealed class Time
    {
        public static float deltaTime => 0f;
    }

    public struct Mathf
    {
        public static float MoveTowards(float current, float target, float maxDelta) => target;
    }

    public sealed class AudioSettings
    {
        /// <summary>Stub only: what outputSampleRate reports.</summary>
        public static int StubOutputSampleRate = 48000;

        public static int outputSampleRate => StubOutputSampleRate;

        public static void GetDSPBufferSize(out int bufferLength, out int numBuffers)
        {
            bufferLength = 1024;
            numBuffers = 4;
        }
    }

    public static class Application
    {
        public static event Action quitting;

        /// <summary>Stub only: raises quitting.</summary>
        public static void StubQuit() => quitting?.Invoke();
    }

    public static class Debug
    {
        public static void Log(object message) => Console.WriteLine(message);

        public static void LogWarning(object message) => Console.WriteLine("warning: " + message);

        public static void LogError(object message) => Console.WriteLine("error: " + message);
    }

    [AttributeUsage(AttributeTargets.Field)]
    public sealed class SerializeField : Attribute
    {
    }

    [AttributeUsage(AttributeTargets.Field)]
    public sealed class TooltipAttribute : Attribute
    {
        public TooltipAttribute(string tooltip)
        {
        }
    }

    [AttributeUsage(AttributeTargets.Field)]
    public sealed class HeaderAttribute : Attribute
    {
        public HeaderAttribute(string header)
        {
        }
    }

    [AttributeUsage(AttributeTargets.Field)]
    public sealed class RangeAttribute : Attribute
    {
        public RangeAttribute(float min, float max)
        {
        }
    }

    [AttributeUsage(AttributeTargets.Class, AllowMultiple = true)]
    public sealed class RequireComponent : Attribute
    {
        public RequireComponent(Type requiredComponent)
        {
        }
    }

    [AttributeUsage(AttributeTargets.Class)]
    public sealed class DisallowMultipleComponent : Attribute
    {
    }

    [AttributeUsage(AttributeTargets.Class)]
    public sealed class AddComponentMenu : Attribute
    {
        public AddComponentMenu(string menuName)
        {
        }
    }
}

namespace UnityEngine.Events
{
    public delegate void UnityAction();

    public delegate void UnityAction<T0>(T0 arg0);

    public delegate void UnityAction<T0, T1>(T0 arg0, T1 arg1);

    public class UnityEvent
    {
        private readonly List<UnityAction> _listeners = new List<UnityAction>();

        public void Invoke() => _listeners.ForEach(l => l());

        public void AddListener(UnityAction call) => _listeners.Add(call);
    }

    public abstract class UnityEvent<T0>
    {
        private readonly List<UnityAction<T0>> _listeners = new List<UnityAction<T0>>();

        public void Invoke(T0 arg0) => _listeners.ForEach(l => l(arg0));

        public void AddListener(UnityAction<T0> call) => _listeners.Add(call);
    }

    public abstract class UnityEvent<T0, T1>
    {
        private readonly List<UnityAction<T0, T1>> _listeners = new List<UnityAction<T0, T1>>();

        public void Invoke(T0 arg0, T1 arg1) => _listeners.ForEach(l => l(arg0, arg1));

        public void AddListener(UnityAction<T0, T1> call) => _listeners.Add(call);
    }
}
