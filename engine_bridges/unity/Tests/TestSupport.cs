using System;
using System.Collections.Generic;
using System.Globalization;
using System.IO;
using System.Text;

namespace NpcVoice.Tests
{
    /// <summary>Helpers shared by the tests: hex, test data location, a small JSON reader.</summary>
    internal static class TestSupport
    {
        public static byte[] Hex(string hex)
        {
            var bytes = new byte[hex.Length / 2];
            for (int i = 0; i < bytes.Length; i++)
            {
                bytes[i] = byte.Parse(hex.Substring(2 * i, 2), NumberStyles.HexNumber);
            }
            return bytes;
        }

        public static string ToHex(byte[] bytes)
        {
            var sb = new StringBuilder(bytes.Length * 2);
            foreach (byte b in bytes)
            {
                sb.Append(b.ToString("x2"));
            }
            return sb.ToString();
        }

        /// <summary>
        /// engine_bridges/testdata/hpack_vectors.json: $NPC_VOICE_HPACK_VECTORS, else searched upward from the
        /// working directory and the test assembly (the file lives beside the package, not inside it).
        /// </summary>
        public static string FindHpackVectors()
        {
            string fromEnv = Environment.GetEnvironmentVariable("NPC_VOICE_HPACK_VECTORS");
            if (!string.IsNullOrEmpty(fromEnv))
            {
                return fromEnv;
            }
            foreach (string start in new[] { Directory.GetCurrentDirectory(), AppDomain.CurrentDomain.BaseDirectory })
            {
                for (string dir = start; dir != null; dir = Path.GetDirectoryName(dir))
                {
                    string candidate = Path.Combine(Path.Combine(Path.Combine(dir, "engine_bridges"), "testdata"), "hpack_vectors.json");
                    if (File.Exists(candidate))
                    {
                        return candidate;
                    }
                }
            }
            return null;
        }
    }

    /// <summary>Just enough JSON for the test vectors: objects, arrays, strings, numbers, true/false/null.</summary>
    internal sealed class MiniJson
    {
        private readonly string _text;
        private int _pos;

        private MiniJson(string text)
        {
            _text = text;
        }

        public static object Parse(string text)
        {
            var parser = new MiniJson(text);
            object value = parser.Value();
            parser.Space();
            if (parser._pos != text.Length)
            {
                throw new FormatException("trailing characters at " + parser._pos);
            }
            return value;
        }

        private void Space()
        {
            while (_pos < _text.Length && char.IsWhiteSpace(_text[_pos]))
            {
                _pos++;
            }
        }

        private object Value()
        {
            Space();
            char c = _text[_pos];
            if (c == '{')
            {
                var obj = new Dictionary<string, object>();
                _pos++;
                Space();
                if (_text[_pos] == '}')
                {
                    _pos++;
                    return obj;
                }
                while (true)
                {
                    Space();
                    string key = String();
                    Space();
                    Expect(':');
                    obj[key] = Value();
                    Space();
                    if (_text[_pos++] == '}')
                    {
                        return obj;
                    }
                }
            }
            if (c == '[')
            {
                var list = new List<object>();
                _pos++;
                Space();
                if (_text[_pos] == ']')
                {
                    _pos++;
                    return list;
                }
                while (true)
                {
                    list.Add(Value());
                    Space();
                    if (_text[_pos++] == ']')
                    {
                        return list;
                    }
                }
            }
            if (c == '"')
            {
                return String();
            }
            foreach (string word in new[] { "true", "false", "null" })
            {
                if (string.CompareOrdinal(_text, _pos, word, 0, word.Length) == 0)
                {
                    _pos += word.Length;
                    return word == "null" ? null : (object)(word == "true");
                }
            }
            int start = _pos;
            while (_pos < _text.Length && "+-0123456789.eE".IndexOf(_text[_pos]) >= 0)
            {
                _pos++;
            }
            return double.Parse(_text.Substring(start, _pos - start), CultureInfo.InvariantCulture);
        }

        private void Expect(char c)
        {
            if (_text[_pos++] != c)
            {
                throw new FormatException("expected '" + c + "' at " + (_pos - 1));
            }
        }

        private string String()
        {
            Expect('"');
            var sb = new StringBuilder();
            while (true)
            {
                char c = _text[_pos++];
                if (c == '"')
                {
                    return sb.ToString();
                }
                if (c != '\\')
                {
                    sb.Append(c);
                    continue;
                }
                char e = _text[_pos++];
                switch (e)
                {
                    case 'n': sb.Append('\n'); break;
                    case 't': sb.Append('\t'); break;
                    case 'r': sb.Append('\r'); break;
                    case 'b': sb.Append('\b'); break;
                    case 'f': sb.Append('\f'); break;
                    case 'u':
                        sb.Append((char)int.Parse(_text.Substring(_pos, 4), NumberStyles.HexNumber));
                        _pos += 4;
                        break;
                    default: sb.Append(e); break;
                }
            }
        }
    }
}
