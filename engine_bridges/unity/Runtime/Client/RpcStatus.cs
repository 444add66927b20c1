using System;

namespace NpcVoice
{
    /// <summary>gRPC status codes (https://grpc.github.io/grpc/core/md_doc_statuscodes.html).</summary>
    public enum StatusCode
    {
        OK = 0, Cancelled = 1, Unknown = 2, InvalidArgument = 3, DeadlineExceeded = 4, NotFound = 5,
        AlreadyExists = 6, PermissionDenied = 7, ResourceExhausted = 8, FailedPrecondition = 9, Aborted = 10,
        OutOfRange = 11, Unimplemented = 12, Internal = 13, Unavailable = 14, DataLoss = 15, Unauthenticated = 16,
    }

    /// <summary>The final status of a call: a code and the decoded grpc-message.</summary>
    public struct RpcStatus
    {
        public readonly StatusCode Code;
        public readonly string Detail;

        public RpcStatus(StatusCode code, string detail)
        {
            Code = code;
            Detail = detail ?? "";
        }

        public static readonly RpcStatus Ok = new RpcStatus(StatusCode.OK, "");

        public override string ToString() => Code + (Detail.Length > 0 ? ": " + Detail : "");
    }

    /// <summary>A call ended with a status other than OK.</summary>
    public sealed class RpcException : Exception
    {
        public readonly RpcStatus Status;

        public RpcException(RpcStatus status) : base("gRPC call failed with " + status)
        {
            Status = status;
        }

        public StatusCode Code => Status.Code;
    }
}
